"""What trains: named presets, a regular expression over official key names, and the parameter counts.

The UNet's parameters fall into groups by the module that holds them (``parameter_group``):

==================  ====================================================================================
``temporal_attn``   the temporal transformers after every spatial transformer (``*_blocks.N.2.*``,
                    ``middle_block.2.*``): attention across frames
``init_attn``       the temporal transformer right after ``conv_in`` (``init_attn.0.*``)
``temporal_conv``   the temporal convolutions closing every ResBlock (``*.temopral_conv.*``, sic)
``fps_embedding``   the frame-rate condition's MLP (``fps_embedding.*``)
``spatial``         everything else: the Stable-Diffusion-2.1-shaped layers (ResBlocks, spatial
                    transformers with their image cross-attention ``to_k_ip``/``to_v_ip``, time
                    embedding, conv_in, down/upsampling, ``out``)
``projector``       the image-context projector (Resampler, ``image_proj_model.*``)
==================  ====================================================================================

Presets (``PRESETS``): ``rectify`` (the paper's toon rectification learning: projector + spatial; every
temporal group and ``fps_embedding`` frozen), ``full`` (the official DynamiCrafter trainer: the whole
UNet and the projector), ``projector`` (the Resampler only: ablation V of the paper), ``spatial`` (the
spatial layers only, projector frozen). Anything else is a regular expression searched (``re.search``) in
the official key names ``model.diffusion_model.*`` / ``image_proj_model.*``.

Why ``fps_embedding`` is frozen in ``rectify``: the paper trains "the spatial layers, sharing the same
architecture as Stable Diffusion 2.1" and freezes the temporal layers to keep the motion prior learned on
live-action video. ``fps_embedding`` does not exist in SD 2.1; it tells the network how fast things move
between frames, which is part of that motion prior (frame rate is a temporal quantity), and rectification
data (cartoons, often on twos) would otherwise re-tune what a given ``fs`` means. Freezing it keeps the
inference-side ``--frame-stride`` meaning what it meant for the released model. Opt back in with
``--trainable`` (e.g. a regex adding ``fps_embedding``). This is definition A of the training spec's table
(940,268,740 trainable parameters at 512).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torch import nn

from toonctl.errors import ToonctlError

UNET_PREFIX = "model.diffusion_model."
IMAGE_PROJ_PREFIX = "image_proj_model."

GROUPS = ("spatial", "temporal_attn", "init_attn", "temporal_conv", "fps_embedding", "projector")
TEMPORAL_GROUPS = frozenset({"temporal_attn", "init_attn", "temporal_conv"})

PRESETS: dict[str, frozenset[str]] = {
    "rectify": frozenset({"projector", "spatial"}),
    "full": frozenset(GROUPS),
    "projector": frozenset({"projector"}),
    "spatial": frozenset({"spatial"}),
}
PRESET_HELP = {
    "rectify": "the paper's toon rectification: Resampler + spatial layers; temporal layers and fps_embedding frozen",
    "full": "the whole UNet and the Resampler (the official DynamiCrafter trainer)",
    "projector": "the Resampler (image-context projector) only",
    "spatial": "the UNet's spatial layers only (Resampler frozen)",
}
DEFAULT_PRESET = "rectify"


class TrainableSpecError(ToonctlError, ValueError):
    """A ``--trainable`` value that is not a preset, not a valid regular expression, or matches nothing."""


@dataclass
class GroupCount:
    """Parameters of one group: how many train and how many there are."""

    trainable: int = 0
    total: int = 0


@dataclass
class TrainableSummary:
    """What ``apply_trainable`` made trainable.

    Attributes:
        spec: the preset name or the regular expression.
        trainable_params, frozen_params: element counts over the UNet and the projector (the VAE and CLIP
            towers are always frozen and not counted).
        trainable_tensors, frozen_tensors: tensor counts.
        groups: per group (``GROUPS``, plus ``lora`` for adapter weights) the trainable and total counts.
    """

    spec: str
    trainable_params: int = 0
    frozen_params: int = 0
    trainable_tensors: int = 0
    frozen_tensors: int = 0
    groups: dict[str, GroupCount] = field(default_factory=dict)

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.frozen_params

    def to_dict(self) -> dict:
        return {
            "spec": self.spec,
            "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params,
            "trainable_tensors": self.trainable_tensors,
            "frozen_tensors": self.frozen_tensors,
            "groups": {name: {"trainable": c.trainable, "total": c.total} for name, c in self.groups.items()},
        }

    def lines(self) -> list[str]:
        """A short human-readable table (one line per group, then the totals)."""
        out = [f"{'group':<14} {'trainable':>15} {'of':>15}"]
        for name, count in self.groups.items():
            out.append(f"{name:<14} {count.trainable:>15,} {count.total:>15,}")
        out.append(f"{'total':<14} {self.trainable_params:>15,} {self.total_params:>15,}")
        return out


# -- naming --------------------------------------------------------------------------------------------------


def official_key(component: str, name: str) -> str:
    """Our parameter name in ``unet`` / ``image_proj`` -> the official checkpoint key.

    peft's wrapping (``<layer>.base_layer.weight``) is undone, so a LoRA-wrapped model names its frozen base
    weights as the checkpoint does.
    """
    prefix = {"unet": UNET_PREFIX, "image_proj": IMAGE_PROJ_PREFIX}[component]
    return prefix + name.replace(".base_layer.", ".")


def is_lora_parameter(name: str) -> bool:
    """True for peft adapter weights (``lora_A`` / ``lora_B`` / ``lora_embedding_*`` / ``lora_magnitude``)."""
    return ".lora_" in name


def _module_groups(unet: nn.Module) -> list[tuple[str, str]]:
    """``(module name prefix, group)`` of the UNet's temporal parts and the fps embedding, longest first."""
    from toonctl.models.unet_blocks import TemporalConvBlock, TemporalTransformer

    prefixes = []
    for name, module in unet.named_modules():
        name = name.replace(".base_layer", "")
        if isinstance(module, TemporalTransformer):
            group = "init_attn" if name.startswith("init_attn") else "temporal_attn"
        elif isinstance(module, TemporalConvBlock):
            group = "temporal_conv"
        elif name == "fps_embedding":
            group = "fps_embedding"
        else:
            continue
        prefixes.append((name + ".", group))
    return prefixes


def parameter_group(name: str, prefixes: list[tuple[str, str]]) -> str:
    """The group of UNet parameter ``name`` (local name), given ``_module_groups``."""
    for prefix, group in prefixes:
        if name.startswith(prefix):
            return group
    return "spatial"


def iter_parameters(pipe) -> Iterator[tuple[str, str, nn.Parameter]]:
    """``(official key, group, parameter)`` for every UNet and projector parameter (adapter weights: group
    ``lora``, key with the adapter's own name)."""
    unet = unwrap_module(pipe.unet)
    proj = None if pipe.image_proj is None else unwrap_module(pipe.image_proj)
    prefixes = _module_groups(unet)
    for name, param in unet.named_parameters():
        group = "lora" if is_lora_parameter(name) else parameter_group(name, prefixes)
        yield official_key("unet", name), group, param
    if proj is not None:
        for name, param in proj.named_parameters():
            group = "lora" if is_lora_parameter(name) else "projector"
            yield official_key("image_proj", name), group, param


def unwrap_module(module: nn.Module) -> nn.Module:
    """The module inside a DDP / accelerate wrapper (``.module``)."""
    while hasattr(module, "module") and isinstance(module.module, nn.Module):
        module = module.module
    return module


# -- selection -----------------------------------------------------------------------------------------------


def trainable_predicate(spec: str) -> Callable[[str, str], bool]:
    """``(official key, group) -> trains?`` for a preset name or a regular expression.

    Raises:
        TrainableSpecError: ``spec`` is neither a preset nor a valid regular expression.
    """
    if spec in PRESETS:
        groups = PRESETS[spec]
        return lambda key, group: group in groups
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise TrainableSpecError(
            f"--trainable {spec!r} is not a preset and not a valid regular expression ({exc})",
            hint=f"presets: {', '.join(PRESETS)}; or a regex over keys like model.diffusion_model.out.2.weight",
        ) from None
    return lambda key, group: pattern.search(key) is not None


def apply_trainable(pipe, spec: str = DEFAULT_PRESET) -> TrainableSummary:
    """Set ``requires_grad`` on the UNet and the projector per ``spec``; freeze the VAE and the CLIP towers.

    LoRA adapter weights are left as they are, so ``apply_trainable(pipe, "projector")`` after ``add_lora``
    trains the adapters and the Resampler.

    Args:
        pipe: an ``InterpolationPipeline`` (or anything with ``unet`` and ``image_proj``; ``vae``,
            ``text_encoder``, ``image_encoder`` are frozen when present).
        spec: a preset (``PRESETS``) or a regular expression searched in the official keys.

    Returns:
        The counts (``TrainableSummary``).

    Raises:
        TrainableSpecError: a bad regular expression, or one that matches no parameter.
    """
    trains = trainable_predicate(spec)
    for name in ("vae", "text_encoder", "image_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    for key, group, param in iter_parameters(pipe):
        if group != "lora":  # LoRA adapters (``lora.add_lora``) keep their setting: a preset can add to them
            param.requires_grad_(trains(key, group))
    summary = summarize_trainable(pipe, spec)
    if summary.trainable_params == 0:
        raise TrainableSpecError(
            f"--trainable {spec!r} matches no UNet or Resampler parameter",
            hint="keys look like model.diffusion_model.input_blocks.1.1.proj_in.weight or image_proj_model.latents",
        )
    return summary


def summarize_trainable(pipe, spec: str = "") -> TrainableSummary:
    """Count the trainable (``requires_grad``) and frozen parameters of the UNet and the projector, by group."""
    summary = TrainableSummary(spec=spec, groups={g: GroupCount() for g in GROUPS})
    for _key, group, param in iter_parameters(pipe):
        count = summary.groups.setdefault(group, GroupCount())
        n = param.numel()
        count.total += n
        if param.requires_grad:
            count.trainable += n
            summary.trainable_params += n
            summary.trainable_tensors += 1
        else:
            summary.frozen_params += n
            summary.frozen_tensors += 1
    return summary


def trainable_parameters(*modules: nn.Module | None) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` of ``modules`` (what the optimizer gets)."""
    return [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]


# -- LoRA settings (applied by ``toonctl.training.lora``) -------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA adapter on the UNet's spatial layers (the light alternative to a preset).

    Attributes:
        rank: r, the inner dimension of each ``B @ A`` update.
        alpha: the update is scaled by ``alpha / rank`` (peft's ``lora_alpha``).
        dropout: dropout on the adapter's input during training (peft's ``lora_dropout``).
        convs: also adapt the spatial ResBlocks' 3x3 convolutions (``in_layers.2``, ``out_layers.3``), not only
            the spatial attention projections.
    """

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    convs: bool = False

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise TrainableSpecError(f"LoRA rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise TrainableSpecError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise TrainableSpecError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank
