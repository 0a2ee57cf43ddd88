"""Where the model weights live and how they get there: download, import, list, verify and resolve.

The weights folder is ``weights/`` under the current directory, or ``$TOONCTL_WEIGHTS``. It holds the
official files of the Hugging Face repository ``Doubiiu/ToonCrafter`` (``model.ckpt``,
``sketch_encoder.ckpt``, ``sketch_extractor.pth``) and converted models (``convert/components.py``), one
directory each. One module per job: ``files`` (the folder, the official files), ``fetch`` (download),
``importing`` (a local checkpoint -> a converted folder), ``inventory`` (list, verify) and ``resolve`` (which
weights a run uses, and loading them). The public names are importable from here. Importing this package does
not import torch (the CLI reads its constants for ``--help``); the functions that touch tensors import it when
called.
"""

from toonctl.weights.fetch import fetch, remove_stale_lock
from toonctl.weights.files import (
    CHECKPOINT_SUFFIXES,
    DEFAULT_WEIGHTS_DIR,
    EXTRACTOR_FILES,
    HF_REPO,
    MODEL_FILES,
    OFFICIAL_FILES,
    SIZE_TOLERANCE,
    SKETCH_FILES,
    WEIGHTS_ENV,
    ByteProgress,
    ComponentProgress,
    OfficialFile,
    check_dest,
    check_model_name,
    human_size,
    weights_dir,
)
from toonctl.weights.importing import MISSING_CLIP, checkpoint_layout, clip_renames, default_name, import_checkpoint
from toonctl.weights.inventory import (
    VerifyReport,
    WeightsEntry,
    file_complete,
    hub_sha256,
    list_weights,
    sha256_file,
    sketch_file_kind,
    verify,
)
from toonctl.weights.resolve import config_for, find_weights, find_weights_file, load_weights, resolve_weights

__all__ = [
    "CHECKPOINT_SUFFIXES", "DEFAULT_WEIGHTS_DIR", "EXTRACTOR_FILES", "HF_REPO", "MISSING_CLIP", "MODEL_FILES",
    "OFFICIAL_FILES", "SIZE_TOLERANCE", "SKETCH_FILES", "WEIGHTS_ENV", "ByteProgress", "check_dest",
    "check_model_name", "checkpoint_layout", "clip_renames", "ComponentProgress", "config_for", "default_name",
    "fetch", "file_complete", "find_weights", "find_weights_file", "hub_sha256", "human_size", "import_checkpoint",
    "list_weights", "load_weights", "OfficialFile", "remove_stale_lock", "resolve_weights", "sha256_file",
    "sketch_file_kind", "verify", "VerifyReport", "weights_dir", "WeightsEntry",
]  # fmt: skip
