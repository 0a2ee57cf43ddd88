"""The official-yaml reader moved to ``toonctl.convert.config`` (it is a converter); this name is kept for the
code written against it (``toonctl.evaluation.setup``). New code: ``toonctl.weights.config_for`` or
``toonctl.convert.config.load_config``."""

from toonctl.convert.config import config_from_official, load_config

__all__ = ["config_from_official", "load_config"]
