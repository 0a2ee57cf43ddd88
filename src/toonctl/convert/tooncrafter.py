"""Read the official ToonCrafter checkpoint layout and load it, strictly, into our modules.

The official ``model.ckpt`` is ``{"state_dict": LatentVisualDiffusion.state_dict()}`` (a deepspeed
``{"module": ...}`` form with ``_forward_module.`` key prefixes is also accepted, as the official
loader does); an official-layout ``.safetensors`` holds the same keys. Our modules keep the official
names under each component prefix, so loading is prefix stripping, plus dropping the tensors that
inference never reads (the documented never-used set of ``golden/tooncrafter-512-keys.tsv``).

Loading never unpickles arbitrary objects (``torch.load(weights_only=True)``) and never holds two
copies of the weights: modules are built on the meta device and each tensor is moved to its device
and dtype as it is assigned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toonctl.errors import CheckpointError, CheckpointMismatchError
from toonctl.models.configs import ToonCrafterConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
IMAGE_EMBEDDER_PREFIX = "embedder.model."
IMAGE_PROJ_PREFIX = "image_proj_model."

# Schedule buffers (no prefix) the sampler reads, and the ones the official model stores but never reads.
SCHEDULE_KEYS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "scale_arr",
)  # fmt: skip
UNUSED_SCHEDULE_KEYS = (
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)  # fmt: skip


def _unused_patterns(config: ToonCrafterConfig) -> list[str]:
    """Regexes of the keys inference never reads (they must be accepted, and are not loaded)."""
    last_text_block = config.text.layers - 1
    return [
        *(re.escape(k) for k in UNUSED_SCHEDULE_KEYS),
        re.escape(VAE_PREFIX + "post_quant_conv.") + ".*",
        re.escape(TEXT_PREFIX) + r"(text_projection|logit_scale)",
        re.escape(f"{TEXT_PREFIX}transformer.resblocks.{last_text_block}.") + ".*",
        re.escape(IMAGE_EMBEDDER_PREFIX)
        + r"(token_embedding\.weight|positional_embedding|ln_final\..*|text_projection|logit_scale"
        + r"|visual\.proj|visual\.ln_post\..*)",
    ]


@dataclass(frozen=True)
class Component:
    """One network of the checkpoint: its key prefix and how to build it from the config."""

    name: str
    prefix: str
    build: Callable[[ToonCrafterConfig], nn.Module]


def _build_unet(config: ToonCrafterConfig) -> nn.Module:
    from toonctl.models.unet_toon3d import ToonUNet3D

    return ToonUNet3D(config.unet)


def _build_vae(config: ToonCrafterConfig) -> nn.Module:
    from toonctl.models.autoencoder_dualref import AutoencoderKLDualRef

    return AutoencoderKLDualRef(config.vae)


def _build_text(config: ToonCrafterConfig) -> nn.Module:
    from toonctl.models.clip_encoders import OpenCLIPTextEncoder

    return OpenCLIPTextEncoder(config.text)


def _build_image(config: ToonCrafterConfig) -> nn.Module:
    from toonctl.models.clip_encoders import OpenCLIPVisionEncoder

    return OpenCLIPVisionEncoder(config.vision)


def _build_image_proj(config: ToonCrafterConfig) -> nn.Module:
    from toonctl.models.image_proj import Resampler

    return Resampler(config.image_proj)


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("unet", UNET_PREFIX, _build_unet),
        Component("vae", VAE_PREFIX, _build_vae),
        Component("text_encoder", TEXT_PREFIX, _build_text),
        Component("image_encoder", IMAGE_EMBEDDER_PREFIX, _build_image),
        Component("image_proj", IMAGE_PROJ_PREFIX, _build_image_proj),
    )
}


class _SafetensorsDict(Mapping):
    """A read-on-demand view of a safetensors file (one tensor in memory at a time)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt", device="cpu")
        self._keys = list(self._file.keys())
        self._key_set = set(self._keys)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:  # Mapping's default reads the tensor and expects a KeyError
        return key in self._key_set

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())


def read_state_dict(path: str | Path) -> Mapping[str, torch.Tensor]:
    """Open an official-layout checkpoint (``.ckpt``/``.pt``/``.pth`` or ``.safetensors``).

    Returns a mapping of official key -> tensor. ``.ckpt`` files are memory-mapped and
    ``.safetensors`` files are read tensor by tensor, so nothing is loaded twice.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return _SafetensorsDict(path)
        except Exception as exc:  # SafetensorError: truncated header, bad JSON, ...
            raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({exc})") from exc
    try:
        obj = _torch_load(path)
    except Exception as exc:  # UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        raise _load_error(path, exc) from exc
    return _unwrap(obj, path)


def _load_error(path: Path, exc: Exception) -> CheckpointError:
    """One line in our words for a failed ``torch.load``: never torch's advice to load unsafely."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return CheckpointError(
            f"cannot read {path}: it holds a pickled Python object ({refused.group(1)}), not only tensors;"
            " toonctl loads tensors only and never runs code from a checkpoint",
            hint="save just the model's state_dict (tensors) with the tool that made it, or use a .safetensors file",
        )
    if "legacy .tar format" in text:  # torch's guess for bytes it does not recognise (also a file of zeros)
        return CheckpointError(
            f"cannot read {path}: it is truncated, corrupt or not a PyTorch checkpoint (unrecognised format)",
            hint="re-download it (toonctl weights fetch) or check the path",
        )
    if "WeightsUnpickler" in text:  # e.g. "Unsupported operand 149": a plain pickle.dump, not torch.save
        return CheckpointError(
            f"cannot read {path}: not a tensors-only PyTorch checkpoint ({_load_failure(exc)})",
            hint="toonctl loads tensors only: save the state_dict with torch.save, or use a .safetensors file",
        )
    return CheckpointError(
        f"cannot read {path}: it is truncated, corrupt or not a PyTorch checkpoint ({_load_failure(exc)})",
        hint="re-download it (toonctl weights fetch) or check the path",
    )


def _load_failure(exc: Exception) -> str:
    """The useful part of a ``torch.load`` failure.

    A refused weights-only load carries a page of advice (including re-running with ``weights_only=False``,
    which toonctl never does); what went wrong is the text after ``WeightsUnpickler error:``.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
        detail = detail.split(" Please use ")[0].strip()
        return f"refused by the tensors-only loader: {detail}" if detail else "refused by the tensors-only loader"
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def _torch_load(path: Path) -> object:
    """``torch.load`` restricted to tensors and containers; memory-mapped when the file allows it.

    torch's warning about an unusual pickle protocol (two lines on stderr before our own error) is silenced.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # only the pre-1.6 (non-zip) format cannot be memory-mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "module" in obj and isinstance(obj["module"], dict):
        # deepspeed: keys carry a "_forward_module." prefix, which the official loader strips.
        obj = {k.removeprefix("_forward_module."): v for k, v in obj["module"].items()}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def split_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: ToonCrafterConfig, components: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """Assign every checkpoint key to a component (or to the schedule), strictly.

    Returns ``{component: {local_key: official_key}}`` plus ``"schedule"``. Raises
    ``CheckpointMismatchError`` naming the keys that belong nowhere. Keys of components not in
    ``components`` are skipped (for loading a subset), but must still be known keys.
    """
    wanted = set(COMPONENTS if components is None else components)
    unused = re.compile("|".join(f"(?:{p})" for p in _unused_patterns(config)))
    plan: dict[str, dict[str, str]] = {name: {} for name in COMPONENTS}
    plan["schedule"] = {}
    unexpected = []
    for key in state_dict:
        if unused.fullmatch(key):
            continue
        if key in SCHEDULE_KEYS:
            plan["schedule"][key] = key
            continue
        for comp in COMPONENTS.values():
            if key.startswith(comp.prefix):
                plan[comp.name][key[len(comp.prefix) :]] = key
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointMismatchError(
            "the checkpoint has keys that are not part of a ToonCrafter model",
            unexpected=sorted(unexpected),
            hint="is this a ToonCrafter checkpoint? (e.g. a Stable Diffusion file will not load)",
        )
    return {name: keys for name, keys in plan.items() if name in wanted or name == "schedule"}


def build_empty(config: ToonCrafterConfig, name: str) -> nn.Module:
    """Build a component on the meta device (no memory for weights)."""
    with torch.device("meta"):
        module = COMPONENTS[name].build(config)
    return module.eval().requires_grad_(False)


def find_mismatches(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], keys: Mapping[str, str], *, name: str
) -> tuple[list[str], list[str], list[str]]:
    """Compare ``keys`` (local -> official) with ``module``'s state dict: (missing, unexpected, wrong shape)."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
    prefix = COMPONENTS[name].prefix if name in COMPONENTS else ""
    missing = [prefix + k for k in sorted(set(expected) - set(keys))]
    unexpected = [keys[k] for k in sorted(set(keys) - set(expected))]
    mismatched = []
    for local in sorted(set(expected) & set(keys)):
        shape = _shape_of(state_dict, keys[local])
        if shape != expected[local]:
            mismatched.append(f"{keys[local]} {list(shape)} (expected {list(expected[local])})")
    return missing, unexpected, mismatched


def strip_shared_prefix(keys: Iterable[str], prefix: str) -> dict[str, str]:
    """``{key less prefix: key}`` when every key starts with ``prefix`` (a wrapper's name), else ``{key: key}``."""
    keys = list(keys)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix) :]: k for k in keys}
    return {k: k for k in keys}


def build_checked(
    name: str,
    build: Callable[[], nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    keys: Mapping[str, str],
    *,
    message: str,
    hint: str,
) -> nn.Module:
    """``build()`` on the meta device, checked against ``state_dict`` under ``keys`` (see ``check_modules``)."""
    with torch.device("meta"):
        module = build()
    check_modules({name: module}, state_dict, {name: keys}, message=message, hint=hint)
    return module


def check_modules(
    modules: Mapping[str, nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    plan: Mapping[str, Mapping[str, str]],
    *,
    message: str | None = None,
    hint: str = "check that --config describes this checkpoint",
) -> None:
    """Raise one ``CheckpointMismatchError`` naming every missing, unexpected or wrong-shape key of ``modules``
    (built on meta) against ``plan`` (``{name: {local key: checkpoint key}}``); no tensor data is read."""
    missing, unexpected, mismatched = [], [], []
    for name, module in modules.items():
        m, u, w = find_mismatches(module, state_dict, plan[name], name=name)
        missing += m
        unexpected += u
        mismatched += w
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            message or f"the checkpoint does not match the architecture of the config ({', '.join(modules)})",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            hint=hint,
        )


def load_module(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    keys: Mapping[str, str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Load ``state_dict[keys[local]]`` into ``module`` (built on meta), tensor by tensor, strictly.

    Each tensor goes straight to ``device`` and ``dtype`` (integer tensors keep theirs).
    """
    tensors = {}
    for local, official in keys.items():
        tensor = state_dict[official]
        target_dtype = dtype if tensor.is_floating_point() else tensor.dtype
        tensors[local] = tensor.to(device=device, dtype=target_dtype)
    module.load_state_dict(tensors, strict=True, assign=True)
    _check_no_meta_tensors(module)
    return module


def _shape_of(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if hasattr(state_dict, "shape"):  # read-on-demand mappings give shapes without loading the tensor
        return state_dict.shape(key)
    return tuple(state_dict[key].shape)


def _check_no_meta_tensors(module: nn.Module) -> None:
    """Non-persistent buffers are not in checkpoints: a module built on meta must not have any."""
    for name, buf in module.named_buffers():
        if buf.is_meta:
            raise RuntimeError(f"buffer {name} of {type(module).__name__} is still on the meta device after loading")


def load_schedule(state_dict: Mapping[str, torch.Tensor], keys: Mapping[str, str], config: ToonCrafterConfig):
    """The sampler's schedule buffers: from the checkpoint when stored, else rebuilt from the config."""
    from toonctl.samplers.schedules import make_schedule_buffers

    if not keys:
        return make_schedule_buffers(config.diffusion)
    needed = [k for k in SCHEDULE_KEYS if k != "scale_arr" or config.diffusion.use_dynamic_rescale]
    missing = [k for k in needed if k not in keys]
    if missing:
        raise CheckpointMismatchError("the checkpoint's schedule buffers are incomplete", missing=missing)
    return {k: state_dict[keys[k]].to(torch.float32).clone() for k in needed}


def load_components(
    path: str | Path,
    config: ToonCrafterConfig,
    *,
    components: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, object]:
    """Load an official-layout checkpoint into our modules.

    Args:
        path: ``model.ckpt`` (``{"state_dict": ...}``) or an official-layout ``.safetensors``.
        config: the architecture (``toonctl.config.load_config``).
        components: subset of ``COMPONENTS`` to load (default: all).
        device, dtype: where and in which floating dtype the weights land (schedule stays float32).

    Returns:
        ``{name: module}`` for each component, plus ``"schedule"``: the sampler's buffers.
    """
    state_dict = read_state_dict(path)
    plan = split_state_dict(state_dict, config, components)
    modules = {name: build_empty(config, name) for name in plan if name != "schedule"}
    check_modules(modules, state_dict, plan)
    loaded: dict[str, object] = {
        name: load_module(module, state_dict, plan[name], device=device, dtype=dtype)
        for name, module in modules.items()
    }
    loaded["schedule"] = load_schedule(state_dict, plan["schedule"], config)
    return loaded
