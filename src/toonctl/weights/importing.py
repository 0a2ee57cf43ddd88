"""Import a local checkpoint into a converted folder (``toonctl weights import``): the official ``model.ckpt``,
an official-layout safetensors, or a pruned file whose CLIP towers come from another checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from toonctl.dtypes import DTYPE_NAMES, torch_dtype
from toonctl.errors import CheckpointError, OptionError
from toonctl.weights.files import ComponentProgress, check_dest, check_model_name, weights_dir
from toonctl.weights.resolve import config_for

if TYPE_CHECKING:
    import torch

    from toonctl.models.configs import ToonCrafterConfig


def checkpoint_layout(keys: Iterable[str]) -> str:
    """``"official"`` (every component) or ``"pruned"`` (UNet and VAE, no CLIP towers: kijai's fp16 file).

    Raises ``CheckpointError`` for files that are not ToonCrafter checkpoints.
    """
    from toonctl.convert.tooncrafter import IMAGE_EMBEDDER_PREFIX, TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX

    keys = list(keys)
    prefixes = (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX, IMAGE_EMBEDDER_PREFIX)
    has = {p: any(k.startswith(p) for k in keys) for p in prefixes}
    if not (has[UNET_PREFIX] and has[VAE_PREFIX]):
        raise CheckpointError(
            f"not a ToonCrafter checkpoint: no {UNET_PREFIX}* / {VAE_PREFIX}* keys",
            hint="expected the official model.ckpt, an official-layout .safetensors, or kijai's pruned fp16 file",
        )
    return "official" if has[TEXT_PREFIX] or has[IMAGE_EMBEDDER_PREFIX] else "pruned"


MISSING_CLIP = (
    "{path} has no CLIP text/image towers (a pruned checkpoint such as kijai's "
    "tooncrafter_512_interp-pruned-fp16.safetensors drops cond_stage_model.* and embedder.*); they are needed "
    "to run the model. Pass --clip PATH: an OpenCLIP ViT-H-14 checkpoint (open_clip_pytorch_model.bin or "
    "open_clip_model.safetensors from laion/CLIP-ViT-H-14-laion2B-s32b-b79k) or an official model.ckpt to take "
    "them from"
)


class _KeyView(Mapping):
    """Official key -> tensor, read lazily from one or more source mappings under other names."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[Mapping, str]] = {}

    def add(self, source: Mapping, renames: Mapping[str, str]) -> None:
        """Expose ``source[renames[official]]`` as ``self[official]``."""
        self._where.update((official, (source, key)) for official, key in renames.items())

    def __getitem__(self, key: str):
        source, name = self._where[key]
        return source[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def clip_renames(keys: Iterable[str], path: Path) -> dict[str, str]:
    """Map a CLIP checkpoint's keys to official ToonCrafter keys: ``{official: key in the file}``.

    Accepts the open_clip layout (``token_embedding.weight``, ``transformer.resblocks.*``, ``ln_final.*``,
    ``visual.*``) or an official ToonCrafter checkpoint (``cond_stage_model.model.*``, ``embedder.model.*``).
    Tensors inference never reads (``text_projection``, ``visual.proj``, ...) are dropped later by the splitter.
    """
    from toonctl.convert.tooncrafter import IMAGE_EMBEDDER_PREFIX, TEXT_PREFIX

    keys = list(keys)
    official = {k: k for k in keys if k.startswith((TEXT_PREFIX, IMAGE_EMBEDDER_PREFIX))}
    if official:
        return official
    if "visual.conv1.weight" in keys and "token_embedding.weight" in keys:
        # attn_mask is a computed causal mask (a non-persistent buffer in open_clip), never a weight.
        weights_only = [k for k in keys if k != "attn_mask"]
        return {(IMAGE_EMBEDDER_PREFIX if k.startswith("visual.") else TEXT_PREFIX) + k: k for k in weights_only}
    if any(k.startswith(("text_model.", "vision_model.")) for k in keys):
        raise CheckpointError(
            f"{path} is a transformers CLIPModel file, not the open_clip layout",
            hint="use open_clip_pytorch_model.bin or open_clip_model.safetensors from the same repository",
        )
    raise CheckpointError(
        f"{path} is not an OpenCLIP checkpoint (no visual.conv1.weight / token_embedding.weight) "
        "nor an official ToonCrafter model.ckpt"
    )


def default_name(path: Path, config: ToonCrafterConfig, dtype_label: str) -> str:
    """``tooncrafter-512-fp16`` for the released architecture, else ``<file stem>-<dtype>``."""
    from toonctl.models.configs import ToonCrafterConfig

    stem = "tooncrafter-512" if config == ToonCrafterConfig() else Path(path).stem
    return f"{stem}-{dtype_label}"


def import_checkpoint(
    path: str | Path,
    dest: str | Path | None = None,
    *,
    clip: str | Path | None = None,
    dtype: str = "fp16",
    name: str | None = None,
    config: str | Path | ToonCrafterConfig | None = None,
    overwrite: bool = False,
    progress: ComponentProgress | None = None,
) -> Path:
    """Convert a local checkpoint into ``dest/<name>/`` (a converted directory, ``save_components``).

    Args:
        path: the official ``model.ckpt``, an official-layout ``.safetensors``, or a pruned file without the
            CLIP towers (kijai's ``tooncrafter_512_interp-pruned-fp16.safetensors``).
        dest: the weights folder (default ``weights_dir()``).
        clip: where to take the CLIP towers from when ``path`` lacks them: an OpenCLIP ViT-H-14 checkpoint
            (open_clip layout) or an official ``model.ckpt``. Ignored for complete checkpoints.
        dtype: ``fp16``, ``bf16`` or ``fp32`` for the network weights.
        name: the directory name (default ``default_name``).
        config: the architecture (default: ``config_for(path)``).
        overwrite: replace an existing converted directory of that name.
        progress: called before each component is written.

    Returns:
        The converted directory.
    """
    from toonctl.convert.components import is_converted_dir, save_components
    from toonctl.convert.tooncrafter import read_state_dict

    path = Path(path)
    if is_converted_dir(path):
        raise CheckpointError(f"{path} is already a converted model", hint="use it directly: --weights PATH")
    torch_dtype = _torch_dtype(dtype)
    dest = Path(dest) if dest is not None else weights_dir()
    if name is not None:
        check_model_name(name)
    check_dest(dest)  # before reading gigabytes: the folder can take the result
    config = config_for(path, config)
    state_dict = read_state_dict(path)
    if checkpoint_layout(state_dict) == "pruned":
        if clip is None:
            raise CheckpointError(MISSING_CLIP.format(path=path), hint=f"toonctl weights import {path} --clip PATH")
        source = _KeyView()
        source.add(state_dict, {k: k for k in state_dict})
        clip_dict = read_state_dict(clip)
        source.add(clip_dict, clip_renames(clip_dict, Path(clip)))
        state_dict = source
    out = dest / (name or default_name(path, config, _dtype_label(dtype)))
    return save_components(state_dict, config, out, dtype=torch_dtype, overwrite=overwrite, progress=progress)


def _dtype_label(dtype: str) -> str:
    if dtype not in DTYPE_NAMES:
        raise OptionError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}", option="dtype")
    return dtype


def _torch_dtype(dtype: str) -> torch.dtype:
    return torch_dtype(_dtype_label(dtype))
