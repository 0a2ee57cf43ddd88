"""Read a model's architecture: an official-format yaml (``configs/inference_512_v1.0.yaml`` style)
or our own ``config.json`` (``ToonCrafterConfig.to_dict()``).

The official yaml names OpenCLIP architectures by ``arch`` (default ``ViT-H-14``); architectures other
than ViT-H-14 are looked up in an ``open_clip_model_cfgs`` table, either top-level or in a ``parity:``
block (that is how the golden tiny models declare theirs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toonctl.errors import ConfigError
from toonctl.models.configs import (
    AutoencoderConfig,
    DiffusionConfig,
    ResamplerConfig,
    TextEncoderConfig,
    ToonCrafterConfig,
    UNetConfig,
    VisionEncoderConfig,
)

# OpenCLIP's own ViT-H-14 definition (open_clip/model_configs/ViT-H-14.json).
VIT_H_14 = {
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
}

_UNET_KEYS = {
    "in_channels", "out_channels", "model_channels", "attention_resolutions", "num_res_blocks", "channel_mult",
    "num_head_channels", "transformer_depth", "context_dim", "use_linear", "temporal_conv", "temporal_attention",
    "temporal_selfatt_only", "temporal_length", "addition_attention", "image_cross_attention", "fs_condition",
    "default_fs",
}  # fmt: skip
# Official UNet options that only matter for training or are fixed by ToonCrafter; accepted, checked.
_UNET_FIXED = {
    "dropout": None, "use_checkpoint": None, "use_relative_position": False, "use_causal_attention": False,
    "use_fp16": False, "use_scale_shift_norm": False, "resblock_updown": False, "conv_resample": True, "dims": 2,
    "tempspatial_aware": False, "image_cross_attention_scale_learnable": False,
}  # fmt: skip


def load_config(path: str | Path) -> ToonCrafterConfig:
    """Read ``path`` (yaml in the official layout, or our ``config.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix == ".json":
            return ToonCrafterConfig.from_dict(json.loads(text))
        import yaml

        data = yaml.safe_load(text)
        return config_from_official(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"invalid config {path}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError and friends
        if type(exc).__module__.startswith("yaml"):
            raise ConfigError(f"{path} is not valid yaml: {exc}") from exc
        raise


def config_from_official(data: dict[str, Any]) -> ToonCrafterConfig:
    """Translate the official ``model: target/params`` tree into a ``ToonCrafterConfig``."""
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError("expected an official ToonCrafter config with a top-level 'model:' section")
    params = data["model"].get("params", {})
    unet_params = dict(params["unet_config"]["params"])
    for key, expected in _UNET_FIXED.items():
        value = unet_params.pop(key, expected)
        if expected is not None and value != expected:
            raise ValueError(f"unet_config.{key}={value!r} is not supported (ToonCrafter uses {expected!r})")
    unknown = sorted(set(unet_params) - _UNET_KEYS)
    if unknown:
        raise ValueError(f"unsupported unet_config options: {unknown}")
    unet = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in unet_params.items()})

    first_stage = params["first_stage_config"]
    if not first_stage["target"].endswith("AutoencoderKL_Dualref"):
        raise ValueError(f"first_stage_config must be AutoencoderKL_Dualref, got {first_stage['target']}")
    dd = first_stage["params"]["ddconfig"]
    if list(dd.get("attn_resolutions", [])):
        raise ValueError("ddconfig.attn_resolutions must be empty (ToonCrafter has no per-level VAE attention)")
    vae = AutoencoderConfig(
        in_channels=dd["in_channels"],
        out_ch=dd["out_ch"],
        ch=dd["ch"],
        ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=dd["num_res_blocks"],
        z_channels=dd["z_channels"],
        embed_dim=first_stage["params"]["embed_dim"],
        double_z=dd.get("double_z", True),
        scale_factor=params.get("scale_factor", 0.18215),
    )

    clip_tables = dict(data.get("open_clip_model_cfgs", {}))
    clip_tables.update((data.get("parity") or {}).get("open_clip_model_cfgs", {}))
    text_params = params["cond_stage_config"].get("params", {})
    if text_params.get("layer", "penultimate") != "penultimate":
        raise ValueError("cond_stage_config.layer must be 'penultimate'")
    text_arch = _open_clip_arch(text_params.get("arch", "ViT-H-14"), clip_tables)["text_cfg"]
    text = TextEncoderConfig(
        vocab_size=text_arch.get("vocab_size", 49408),
        context_length=text_arch.get("context_length", 77),
        width=text_arch["width"],
        heads=text_arch["heads"],
        layers=text_arch["layers"],
        mlp_ratio=text_arch.get("mlp_ratio", 4.0),
        layers_used=text_arch["layers"] - 1,
    )
    vision_arch = _open_clip_arch(
        params["img_cond_stage_config"].get("params", {}).get("arch", "ViT-H-14"), clip_tables
    )
    v = vision_arch["vision_cfg"]
    vision = VisionEncoderConfig(
        image_size=v.get("image_size", 224),
        patch_size=v["patch_size"],
        width=v["width"],
        head_width=v.get("head_width", 64),
        layers=v["layers"],
        mlp_ratio=v.get("mlp_ratio", 4.0),
    )
    image_proj = ResamplerConfig(**params["image_proj_stage_config"]["params"])
    diffusion = DiffusionConfig(
        timesteps=params.get("timesteps", 1000),
        linear_start=params.get("linear_start", 0.00085),
        linear_end=params.get("linear_end", 0.012),
        parameterization=params.get("parameterization", "eps"),
        rescale_betas_zero_snr=params.get("rescale_betas_zero_snr", False),
        use_dynamic_rescale=params.get("use_dynamic_rescale", False),
        base_scale=params.get("base_scale", 0.7),
        turning_step=params.get("turning_step", 400),
        image_size=tuple(params.get("image_size", (40, 64))),
    )
    if image_proj.output_dim != unet.context_dim or text.width != unet.context_dim:
        raise ValueError(
            f"context widths disagree: text width {text.width}, Resampler output_dim {image_proj.output_dim}, "
            f"UNet context_dim {unet.context_dim}"
        )
    if image_proj.embedding_dim != vision.width:
        raise ValueError(f"Resampler embedding_dim {image_proj.embedding_dim} != vision width {vision.width}")
    return ToonCrafterConfig(unet=unet, vae=vae, text=text, vision=vision, image_proj=image_proj, diffusion=diffusion)


def _open_clip_arch(name: str, tables: dict[str, Any]) -> dict[str, Any]:
    if name in tables:
        return tables[name]
    if name == "ViT-H-14":
        return VIT_H_14
    raise ValueError(f"unknown OpenCLIP architecture {name!r}; declare it under open_clip_model_cfgs")
