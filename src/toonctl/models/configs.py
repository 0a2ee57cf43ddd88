"""Architecture configs of every ToonCrafter component: one frozen dataclass each.

Defaults are the released ToonCrafter-512 checkpoint's values (``configs/inference_512_v1.0.yaml`` of
the official repository and OpenCLIP ``ViT-H-14``). ``toonctl.convert.config`` reads official-format yaml files
(and our own ``config.json``) into these; the model classes take them as their only constructor argument.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from toonctl.fieldtypes import check_field_types


class _TypeChecked:
    """Base of the configs: field types are checked on construction (``check_field_types``)."""

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclass(frozen=True)
class UNetConfig(_TypeChecked):
    """``lvdm.modules.networks.openaimodel3d.UNetModel`` as ToonCrafter configures it."""

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    use_linear: bool = True
    temporal_conv: bool = True
    temporal_attention: bool = True
    temporal_selfatt_only: bool = True
    temporal_length: int = 16
    addition_attention: bool = True
    image_cross_attention: bool = True
    fs_condition: bool = True
    default_fs: int = 24
    text_context_len: int = 77  # tokens of the text part of the context; the rest are image tokens
    image_tokens_per_frame: int = 16  # Resampler queries per frame (the per-frame context split)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_channels % 32:
            raise ValueError(f"model_channels must be a multiple of 32 (GroupNorm(32)), got {self.model_channels}")
        if self.use_linear is False:
            raise ValueError("use_linear=False is not supported: ToonCrafter uses Linear transformer projections")


@dataclass(frozen=True)
class AutoencoderConfig(_TypeChecked):
    """``AutoencoderKL_Dualref`` (``ddconfig`` + ``embed_dim``)."""

    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    double_z: bool = True
    attn_level: tuple[int, ...] = (2, 3)  # decoder levels with fusion cross-attention (others: Combiner)
    fusion_heads: int = 8
    fusion_dim_head: int = 64
    scale_factor: float = 0.18215

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.double_z:
            raise ValueError("double_z=False is not supported: the encoder must output mean and logvar")


@dataclass(frozen=True)
class TextEncoderConfig(_TypeChecked):
    """OpenCLIP text tower (``FrozenOpenCLIPEmbedder``, ``layer='penultimate'``)."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    heads: int = 16
    layers: int = 24
    mlp_ratio: float = 4.0
    layers_used: int = 23  # penultimate: every block but the last runs


@dataclass(frozen=True)
class VisionEncoderConfig(_TypeChecked):
    """OpenCLIP vision tower (``FrozenOpenCLIPImageEmbedderV2``): all tokens, no ln_post/proj."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    head_width: int = 80
    layers: int = 32
    mlp_ratio: float = 4.0

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class ResamplerConfig(_TypeChecked):
    """``lvdm.modules.encoders.resampler.Resampler`` (the image-context projector)."""

    dim: int = 1024
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16
    embedding_dim: int = 1280
    output_dim: int = 1024
    ff_mult: int = 4
    video_length: int = 16


@dataclass(frozen=True)
class DiffusionConfig(_TypeChecked):
    """The DDPM wrapper's settings (``LatentVisualDiffusion``)."""

    timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012
    parameterization: str = "v"
    rescale_betas_zero_snr: bool = True
    use_dynamic_rescale: bool = True
    base_scale: float = 0.7
    turning_step: int = 400
    image_size: tuple[int, int] = (40, 64)  # latent (h, w) of the native resolution

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameterization != "v":
            raise ValueError(f"only v-parameterisation is supported, got {self.parameterization!r}")


@dataclass(frozen=True)
class ToonCrafterConfig:
    """Every component of one ToonCrafter model."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    image_proj: ResamplerConfig = field(default_factory=ResamplerConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ToonCrafterConfig:
        parts = {}
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping of sections, got {type(data).__name__}")
        for f in fields(cls):
            sub_cls = f.default_factory  # type: ignore[misc]
            if not isinstance(data.get(f.name, {}), dict):
                raise ValueError(f"the {f.name!r} section must be a mapping, got {data[f.name]!r}")
            raw = dict(data.get(f.name, {}))
            if f.name == "diffusion":  # written by earlier versions; the VAE's scale_factor is the one used
                raw.pop("scale_factor", None)
            parts[f.name] = _build(sub_cls, raw)
        return cls(**parts)


def _build(cls, raw: dict):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**values)
