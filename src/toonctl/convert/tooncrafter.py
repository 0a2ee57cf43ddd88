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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toonctl.checkpoint import (  # noqa: F401  (re-exported: the strict loader's names, for the converters)
    IMAGE_EMBEDDER_PREFIX,
    IMAGE_PROJ_PREFIX,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    build_checked,
    check_modules,
    find_mismatches,
    load_module,
    read_state_dict,
    strip_shared_prefix,
)
from toonctl.errors import CheckpointMismatchError
from toonctl.models.configs import ToonCrafterConfig
from toonctl.presets import MODEL_COMPONENTS

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


_PARTS = {  # each of presets.MODEL_COMPONENTS: its key prefix in the official checkpoint, its builder
    "unet": (UNET_PREFIX, _build_unet),
    "vae": (VAE_PREFIX, _build_vae),
    "text_encoder": (TEXT_PREFIX, _build_text),
    "image_encoder": (IMAGE_EMBEDDER_PREFIX, _build_image),
    "image_proj": (IMAGE_PROJ_PREFIX, _build_image_proj),
}
COMPONENTS: dict[str, Component] = {name: Component(name, *_PARTS[name]) for name in MODEL_COMPONENTS}


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


def check_components(
    modules: Mapping[str, nn.Module], state_dict: Mapping[str, torch.Tensor], plan: Mapping[str, Mapping[str, str]]
) -> None:
    """``check_modules`` for components of ``COMPONENTS``, missing keys named with their official prefix."""
    check_modules(modules, state_dict, plan, prefixes={name: COMPONENTS[name].prefix for name in modules})


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
        config: the architecture (``toonctl.convert.config.load_config``).
        components: subset of ``COMPONENTS`` to load (default: all).
        device, dtype: where and in which floating dtype the weights land (schedule stays float32).

    Returns:
        ``{name: module}`` for each component, plus ``"schedule"``: the sampler's buffers.
    """
    state_dict = read_state_dict(path)
    plan = split_state_dict(state_dict, config, components)
    modules = {name: build_empty(config, name) for name in plan if name != "schedule"}
    check_components(modules, state_dict, plan)
    loaded: dict[str, object] = {
        name: load_module(module, state_dict, plan[name], device=device, dtype=dtype)
        for name, module in modules.items()
    }
    loaded["schedule"] = load_schedule(state_dict, plan["schedule"], config)
    return loaded
