"""Type checks of dataclass fields read from files (model configs, shot.yaml settings), with messages naming
the field, before arithmetic on a wrongly typed value fails with a Python message. No torch import.
"""

from __future__ import annotations

from dataclasses import fields


def check_field_types(config: object, *, prefix: str | None = None) -> None:
    """Refuse a value of the wrong type (``model_channels: "320"`` in a yaml) with a message naming the field,
    before arithmetic on it fails with a Python message ("not all arguments converted ...").

    Raises:
        ValueError: ``<prefix><field> must be <kind>, got <value>`` (``prefix`` default: ``<Class>.``).
    """
    prefix = f"{type(config).__name__}." if prefix is None else prefix
    for f in fields(config):
        value = getattr(config, f.name)
        kind = str(f.type)
        if kind.endswith(" | None"):
            if value is None:
                continue
            kind = kind.removesuffix(" | None")
        if kind == "bool":
            ok, wanted = isinstance(value, bool), "true or false"
        elif kind == "int":
            ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif kind == "float":
            ok, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif kind == "str":
            ok, wanted = isinstance(value, str), "a string"
        elif kind.startswith("tuple[int"):
            ok = isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            wanted = "a list of integers"
        else:
            continue
        if not ok:
            raise ValueError(f"{prefix}{f.name} must be {wanted}, got {value!r}")
