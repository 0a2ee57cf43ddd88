"""Training the sketch encoder: a ControlNet on the frozen interpolation model (ToonCrafter paper §3.4).

No official training code exists; this follows the paper and the released checkpoint's layout
(``toonctl.models.sketch_encoder``):

* **Frozen**: the UNet, the VAE, both CLIP towers and the Resampler. Only the sketch encoder trains.
* **Initialisation**: an existing ``sketch_encoder.ckpt`` (continue), or ControlNet-style from the UNet's own
  encoder half (``controlnet_init``): every encoder tensor whose name and shape match the UNet's is copied
  (``time_embed``, the input blocks' ResBlocks and spatial transformers, the middle block), ``conv_in`` takes
  the UNet's first 4 input channels (the noisy latent; the UNet's other 4 read ``c_concat``), and the zero
  convolutions (``zero_convs``, ``middle_block_out``) and the hint block's last conv start at zero, so the
  first step is exactly "no control". The paper initialises from SD 2.1, whose weights are not part of
  toonctl; the checkpoint cannot tell which it was (training-spec §4.2), and the UNet is the network the
  residuals feed, so its weights are the natural ControlNet copy.
* **Sketches**: per frame, white lines on black in [0, 1] at the video's size -- made on the fly by the
  sketch extractor from the clip's frames (``sketch_sources.ExtractedSketches``, optionally cached per clip on
  disk) or read from a ``sketches/`` folder beside the clip (``sketch_sources.read_folder_sketches``, by the
  data loader).
* **Which frames**: ``sparse_sketches.draw_hint_mask`` (the paper's bisection / random mixture). The other
  frames get no residual at all (``MaskedSketchControl``), as ``pipelines.sketch.SketchControl`` does at
  inference with sparse sketches.
* **Loss**: the interpolation objective of the UNet training (``training.objective.interpolation_loss``),
  the control residuals added in the UNet through its ``control`` stage.

Choices on the open questions (training-spec Q4): the encoder's cross-attention sees the 77 text tokens
(``context="text"``, as ``SketchControl``'s default); the residual scale in training is 1 (inference's 0.6 is
a user knob); classifier-free dropout of the prompt and image applies as in the UNet training (the encoder
then sees the empty prompt), and the sketch itself is never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from toonctl.models import fold_frames
from toonctl.models.sketch_encoder import SketchEncoder, SketchEncoderConfig
from toonctl.training.engine import BaseObjective, LossResult
from toonctl.training.sketch_sources import ExtractedSketches
from toonctl.training.sparse_sketches import SparsePattern, draw_hint_mask

DEFAULT_LR = 5e-5  # the paper's (training-spec §4.1), with batch 32 and 50K steps: the shared CLI defaults
SKETCH_SOURCES = ("extract", "folder")

# --------------------------------------------------------------------------------------------- initialisation


@dataclass
class InitReport:
    """What ``controlnet_init`` did: tensors copied whole, copied in part (``conv_in``), zeroed, and left at
    PyTorch's default initialisation (the hint block's first convs)."""

    copied: list[str] = field(default_factory=list)
    sliced: list[str] = field(default_factory=list)
    zeroed: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)


def _layer_pairs(encoder_block: nn.Sequential, unet_block: nn.Sequential) -> list[tuple[nn.Module, nn.Module]]:
    """Pair each layer of an encoder block with the UNet layer of the same class, in order.

    The UNet's blocks hold extra temporal transformers (``input_blocks.N.2``, ``middle_block.2``) that the
    frame-independent encoder lacks, so the middle block's last ResBlock is ``middle_block.2`` in the
    encoder and ``middle_block.3`` in the UNet.
    """
    unet_layers = list(unet_block)
    pairs = []
    for layer in encoder_block:
        while unet_layers and type(unet_layers[0]) is not type(layer):
            unet_layers.pop(0)
        if not unet_layers:
            raise ValueError(f"no UNet layer of type {type(layer).__name__} left to copy from")
        pairs.append((layer, unet_layers.pop(0)))
    return pairs


@torch.no_grad()
def controlnet_init(encoder: SketchEncoder, unet: nn.Module) -> InitReport:
    """Initialise ``encoder`` ControlNet-style from ``unet`` (a ``ToonUNet3D``), in place.

    Copies every matching tensor (see the module docstring), takes the first ``encoder.config.in_channels``
    input channels of the UNet's ``conv_in``, and zeroes the zero convolutions and the hint block's last conv.

    Raises:
        ValueError: the encoder does not mirror the UNet (another level or block layout).
    """
    report = InitReport()
    modules: list[tuple[str, nn.Module, nn.Module]] = [("time_embed", encoder.time_embed, unet.time_embed)]
    if len(encoder.input_blocks) != len(unet.input_blocks):
        raise ValueError(
            f"the sketch encoder has {len(encoder.input_blocks)} input blocks, the UNet {len(unet.input_blocks)}"
        )
    for index, (mine, theirs) in enumerate(zip(encoder.input_blocks, unet.input_blocks, strict=True)):
        for layer, (ours, source) in enumerate(_layer_pairs(mine, theirs)):
            modules.append((f"input_blocks.{index}.{layer}", ours, source))
    for layer, (ours, source) in enumerate(_layer_pairs(encoder.middle_block, unet.middle_block)):
        modules.append((f"middle_block.{layer}", ours, source))

    for prefix, ours, source in modules:
        source_state = source.state_dict()
        for name, tensor in ours.state_dict().items():
            key = f"{prefix}.{name}"
            given = source_state.get(name)
            if given is not None and given.shape == tensor.shape:
                tensor.copy_(given)
                report.copied.append(key)
            elif given is not None and given.ndim == 4 and given.shape[0] == tensor.shape[0] and name == "weight":
                tensor.copy_(given[:, : tensor.shape[1]])  # conv_in: the noisy-latent channels only
                report.sliced.append(key)
            else:
                raise ValueError(f"cannot initialise {key} {tuple(tensor.shape)} from the UNet")
    for key, tensor in encoder.state_dict().items():
        if key.startswith(("zero_convs.", "middle_block_out.")):
            tensor.zero_()
            report.zeroed.append(key)
    last = [m for m in encoder.input_hint_block if isinstance(m, nn.Conv2d)][-1]
    index = list(encoder.input_hint_block).index(last)
    for name, tensor in last.state_dict().items():
        tensor.zero_()
        report.zeroed.append(f"input_hint_block.{index}.{name}")
    done = set(report.copied) | set(report.sliced) | set(report.zeroed)
    report.fresh = [k for k in encoder.state_dict() if k not in done]
    return report


def new_sketch_encoder(unet: nn.Module, *, device: torch.device | str = "cpu") -> SketchEncoder:
    """A sketch encoder matching ``unet``, ControlNet-style initialised from it (fp32, trainable)."""
    encoder = SketchEncoder(SketchEncoderConfig.for_unet(unet.config)).to(device)
    controlnet_init(encoder, unet)
    return encoder.train().requires_grad_(True)


# --------------------------------------------------------------------------------------------- control stage


class MaskedSketchControl:
    """The ``ControlStage`` of a training step: per-sample, per-frame sketches with a sparse mask.

    Only the frames whose ``mask`` is True go through the encoder (it is frame-independent, so each is a
    one-frame sample with its own timestep and context); the others get zero residuals, i.e. the UNet runs
    on them exactly as without control. Gradients flow into the encoder through the residuals.

    Args:
        encoder: the sketch encoder (possibly wrapped for DDP: it is only called).
        hints: ``(B, 1, T, H, W)`` white lines on black in [0, 1], 8x the latent size.
        mask: ``(B, T)`` bool, the frames that carry a sketch.
        scale: residual scale (1 in training).
        context: ``"text"`` (the first ``text_tokens`` tokens) or ``"all"``.
        text_tokens: how many leading context tokens are text (77).
    """

    def __init__(
        self,
        encoder: nn.Module,
        hints: torch.Tensor,
        mask: torch.Tensor,
        *,
        scale: float = 1.0,
        context: str = "text",
        text_tokens: int = 77,
    ) -> None:
        if hints.ndim != 5 or hints.shape[1] != 1:
            raise ValueError(f"hints must be (B, 1, T, H, W), got {tuple(hints.shape)}")
        if tuple(mask.shape) != (hints.shape[0], hints.shape[2]):
            raise ValueError(f"mask must be (B, T) = {(hints.shape[0], hints.shape[2])}, got {tuple(mask.shape)}")
        if context not in ("text", "all"):
            raise ValueError(f"context must be 'text' or 'all', got {context!r}")
        self.encoder = encoder
        self.hints = hints
        self.mask = mask.bool()
        self.scale = float(scale)
        self.context = context
        self.text_tokens = text_tokens

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor] | None:
        """``x`` ``(B, 4, T, h, w)``, ``t`` ``(B,)``, ``context`` ``(B, L, C)`` -> ``(B*T, C_i, h_i, w_i)`` each."""
        b, _, frames, h, w = x.shape
        if (b, frames) != tuple(self.mask.shape):
            raise ValueError(f"the latent has (B, T) = {(b, frames)}, the sketch mask {tuple(self.mask.shape)}")
        picked = self.mask.to(x.device).flatten().nonzero().squeeze(1)  # (K,) indices into B*T, batch-major
        if picked.numel() == 0:
            return None
        sample = torch.div(picked, frames, rounding_mode="floor")
        latent = fold_frames(x)[picked].unsqueeze(2)  # (K, 4, 1, h, w)
        hint = fold_frames(self.hints.to(x.device))[picked].unsqueeze(2)  # (K, 1, 1, H, W)
        tokens = context[:, : self.text_tokens] if self.context == "text" else context
        steps = t.reshape(1).expand(b) if t.ndim == 0 else t
        residuals = self.encoder(latent, hint.to(latent.dtype), steps[sample], tokens[sample])  # each (K, C, h, w)
        spread = []
        for r in residuals:
            full = r.new_zeros(b * frames, *r.shape[1:])
            spread.append(full.index_put((picked,), r * self.scale))  # out of place: differentiable
        return spread


# --------------------------------------------------------------------------------------------- objective


@dataclass
class SketchLoss:
    """One step's loss and what went into it.

    Attributes:
        loss: scalar.
        logs: scalars to log (``sketched_frames``: the share of frames with a sketch).
        hint_mask: ``(B, T)`` the frames that carried a sketch.
        diffusion: the ``InterpolationLoss`` of the step.
    """

    loss: torch.Tensor
    logs: dict[str, float]
    hint_mask: torch.Tensor
    diffusion: object


class SketchEncoderObjective(BaseObjective):
    """The ``sketch-encoder`` objective of the trainer (see the module docstring).

    Args:
        pipe: the ``InterpolationPipeline`` (frozen here: every component ``requires_grad_(False)``).
        encoder: the sketch encoder to train (``new_sketch_encoder`` or ``load_sketch_encoder`` +
            ``requires_grad_(True)``).
        sketches: makes hints for batches that bring none (``ExtractedSketches``); None requires them.
        pattern: the sparse pattern of frames that get a sketch.
        uncond_prob: classifier-free dropout of the conditions, as the UNet training.
        context: the encoder's context (``"text"`` or ``"all"``).
        validation_items: ``toonctl.training.validation.ValidationItem`` clips for ``validate``.
        validation_steps: DDIM steps of the validation interpolations.
    """

    name = "sketch-encoder"
    discriminator = None
    default_learning_rate = DEFAULT_LR

    def __init__(
        self,
        pipe,
        encoder: nn.Module,
        *,
        sketches: ExtractedSketches | None = None,
        pattern: SparsePattern | None = None,
        uncond_prob: float = 0.05,
        context: str = "text",
        validation_items=(),
        validation_steps: int = 10,
    ) -> None:
        self.pipe = pipe
        self.validation_items = list(validation_items)
        self.validation_steps = validation_steps
        self.encoder = encoder
        self.sketches = sketches
        self.pattern = pattern or SparsePattern()
        self.uncond_prob = uncond_prob
        self.context = context
        for module in self.frozen_modules().values():
            module.requires_grad_(False)
        encoder.requires_grad_(True)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"sketch_encoder": self.encoder}

    def set_module(self, name: str, module: nn.Module) -> None:
        if name != "sketch_encoder":
            raise KeyError(f"the sketch-encoder objective has no trainable module {name!r}")
        self.encoder = module

    def frozen_modules(self) -> dict[str, nn.Module]:
        names = ("unet", "vae", "text_encoder", "image_encoder", "image_proj")
        frozen = {n: getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None) is not None}
        if self.sketches is not None:
            frozen["sketch_extractor"] = self.sketches.extractor
        return frozen

    def compute_loss(self, batch, generator: torch.Generator | None) -> LossResult:
        result = self.step_loss(batch, generator)
        return LossResult(result.loss, result.logs)

    def validate(self, step: int, folder: Path) -> list[Path]:
        """Sketch-guided interpolation of each validation clip's key frames, the extractor's sketches of its
        depth-2 bisection frames as control (scale 1), with a fixed seed: ``folder/step-N.gif`` shows the
        ground truth, the sketches and the result, top to bottom, clips side by side."""
        from toonctl.pipelines.placement import ComponentPlacement
        from toonctl.pipelines.sketch import SketchControl
        from toonctl.training.sparse_sketches import bisection_frames
        from toonctl.training.validation import VALIDATION_SEED, grid_frames, write_grid

        if not self.validation_items or self.sketches is None:
            return []
        pipe = self.pipe
        devices = {name: next(module.parameters()).device for name, module in pipe._components().items()}
        pipe.placement = ComponentPlacement(devices["unet"], device_map=devices)
        columns = []
        for item in self.validation_items:
            video = item.video.to(devices["unet"])  # (3, T, H, W)
            frames = video.shape[1]
            hints = self.sketches(video[None])[0]  # (1, T, H, W)
            picked = bisection_frames(frames, 2)
            control = SketchControl(
                self.encoder, {i: hints[:, i] for i in picked}, frames, scale=1.0, context=self.context,
                text_tokens=pipe.config.unet.text_context_len,
            )  # fmt: skip
            output = pipe(
                video[:, 0], video[:, -1], item.prompt, num_frames=frames, steps=self.validation_steps,
                frame_stride=item.fs, control=control, generator=torch.Generator().manual_seed(VALIDATION_SEED),
            )  # fmt: skip
            shown = torch.zeros_like(hints)
            shown[:, picked] = hints[:, picked]
            sketches = (shown * 2 - 1).expand(3, -1, -1, -1).cpu()  # white lines on black, in [-1, 1]
            truth_and_sketches = torch.cat([item.video.cpu(), sketches], dim=2)  # (3, T, 2H, W)
            columns.append((truth_and_sketches, output.video[0].float().cpu()))
        return [write_grid(grid_frames(columns), folder, step)]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the activations of the frozen UNet's and the encoder's blocks in the backward pass (the
        gradient reaches the encoder through the UNet's output half, whose activations are what costs)."""
        from toonctl.models.unet_toon3d import UNetBlock

        for module in (unwrap(self.pipe.unet), unwrap(self.encoder)):
            for block in module.modules():
                if isinstance(block, UNetBlock):
                    block.gradient_checkpointing = True

    def summary(self) -> str:
        trained = sum(p.numel() for p in self.encoder.parameters() if p.requires_grad)
        frozen = {n: sum(p.numel() for p in m.parameters()) for n, m in self.frozen_modules().items()}
        shown = ", ".join(f"{n} {c:,}" for n, c in frozen.items())
        return f"sketch-encoder: {trained:,} trainable parameters (the sketch encoder); frozen: {shown}"

    def hints_for(self, batch) -> torch.Tensor:
        """The batch's hints, or the extractor's from its frames."""
        if batch.hints is not None:
            return batch.hints
        if self.sketches is None:
            raise ValueError("the batch has no sketches and no sketch extractor was given")
        return self.sketches(batch.video)

    def step_loss(self, batch, generator: torch.Generator | None = None, draws=None) -> SketchLoss:
        """The loss of one batch. Random draws, in order: ``TrainingDraws`` (unless given), then the mask
        (unless the batch brings one), all from ``generator``."""
        from toonctl.training.objective import TrainingDraws, interpolation_loss

        b, _, frames, height, width = batch.video.shape
        factor = 2 ** (len(self.pipe.config.vae.ch_mult) - 1)  # pixels per latent cell (8)
        if draws is None:
            draws = TrainingDraws.draw(
                batch_size=b, num_frames=frames, latent_hw=(height // factor, width // factor),
                generator=generator, num_timesteps=len(self.pipe.schedule["sqrt_alphas_cumprod"]),
                device=batch.video.device,
            )  # fmt: skip
        mask = batch.hint_mask
        if mask is None:
            mask = draw_hint_mask(b, frames, generator, self.pattern)
        stage = MaskedSketchControl(
            self.encoder, self.hints_for(batch), mask,
            context=self.context, text_tokens=self.pipe.config.unet.text_context_len,
        )  # fmt: skip
        result = interpolation_loss(self.pipe, batch, draws, uncond_prob=self.uncond_prob, control=stage)
        logs = {"sketched_frames": mask.float().mean().item()}
        return SketchLoss(loss=result.loss, logs=logs, hint_mask=mask, diffusion=result)

    def export(self, destination: str | Path, base_weights: str | Path | None = None) -> Path:
        """Write the encoder as the official ``sketch_encoder.ckpt`` (see ``save_sketch_encoder``); the base
        model is not part of it (``sketch-interp`` takes the two files)."""
        return save_sketch_encoder(self.encoder, destination)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DDP / accelerate / torch.compile wrappers."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def save_sketch_encoder(encoder: nn.Module, destination: str | Path) -> Path:
    """Write ``encoder``'s weights in the released layout: bare ControlNet keys, fp32, atomically.

    ``.safetensors`` writes a safetensors file (kijai's format); anything else a ``torch.save`` state dict
    (``sketch_encoder.ckpt``). Both load with ``load_sketch_encoder``.
    """
    destination = Path(destination)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in unwrap(encoder).state_dict().items()}
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    if destination.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(partial))
    else:
        torch.save(state, partial)
    partial.replace(destination)
    return destination


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SketchSettings:
    """What ``toonctl train sketch-encoder`` trains (the run's ``objective_settings``; ``from_settings``
    rebuilds the objective from them).

    Attributes:
        weights: the interpolation model's official-layout checkpoint (frozen).
        config: its model config (None: found beside it).
        encoder: an existing ``sketch_encoder.ckpt`` to continue from; None: ControlNet-style from the UNet.
        sketch_source: ``extract`` (the extractor draws them from the frames) or ``folder`` (each clip's
            ``sketches/`` folder, read by the data loader: ``DataSettings.sketch_folders``).
        extractor: ``sketch_extractor.pth`` that makes the sketches from the clips' frames.
        sketch_size: the extractor's square processing size (512: Anime2Sketch's).
        sketch_cache: a folder caching each clip's sketches (None: no cache).
        bisection_prob, min_depth, max_depth, include_keyframes: the sparse pattern (``SparsePattern``).
        uncond_prob: the CFG dropout p.
        context: the encoder's context (``"text"`` or ``"all"``).
    """

    weights: str
    config: str | None = None
    encoder: str | None = None
    sketch_source: str = "extract"
    extractor: str | None = None
    sketch_size: int = 512
    sketch_cache: str | None = None
    bisection_prob: float = 0.8
    min_depth: int = 1
    max_depth: int = 4
    include_keyframes: bool = False
    uncond_prob: float = 0.05
    context: str = "text"

    def __post_init__(self) -> None:
        if self.sketch_source not in SKETCH_SOURCES:
            raise ValueError(f"sketch_source must be one of {', '.join(SKETCH_SOURCES)}, got {self.sketch_source!r}")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @property
    def pattern(self) -> SparsePattern:
        return SparsePattern(self.bisection_prob, self.min_depth, self.max_depth, self.include_keyframes)


def load_objective(
    settings: SketchSettings, *, with_extractor: bool = True, validation_items=(), validation_steps: int = 10
) -> SketchEncoderObjective:
    """Load the frozen model, the encoder to train and (``with_extractor``) the sketch extractor, fp32 on the
    CPU (the engine places them). Validation needs the extractor (``sketch_source="extract"``)."""
    from toonctl.errors import ToonctlError
    from toonctl.models.sketch_encoder import load_sketch_encoder
    from toonctl.models.sketch_extractor import load_sketch_extractor
    from toonctl.pipelines.interpolate import InterpolationPipeline

    pattern = settings.pattern  # checks the numbers before anything loads
    sketches = None
    if with_extractor and settings.sketch_source == "extract":  # the small file first: its errors come fast
        if settings.extractor is None:
            raise ValueError("the sketch objective needs a sketch extractor to make its sketches")
        extractor = load_sketch_extractor(settings.extractor)
        multiple = extractor.config.size_multiple
        if settings.sketch_size % multiple:
            raise ToonctlError(
                f"--sketch-size {settings.sketch_size} is not a multiple of {multiple} (this extractor's)",
                hint=f"use e.g. {max(multiple, settings.sketch_size // multiple * multiple)}",
            )
        sketches = ExtractedSketches(extractor, load_size=settings.sketch_size, cache_dir=settings.sketch_cache)
    pipe = InterpolationPipeline.from_checkpoint(settings.weights, settings.config, device="cpu", dtype=torch.float32)
    if settings.encoder is not None:
        encoder = load_sketch_encoder(settings.encoder, SketchEncoderConfig.for_unet(pipe.config.unet))
        encoder = encoder.train().requires_grad_(True)
    else:
        encoder = new_sketch_encoder(pipe.unet)
    return SketchEncoderObjective(
        pipe, encoder, sketches=sketches, pattern=pattern, uncond_prob=settings.uncond_prob, context=settings.context,
        validation_items=validation_items, validation_steps=validation_steps,
    )  # fmt: skip


def from_settings(values: dict) -> SketchEncoderObjective:
    """The objective of a run's ``objective_settings`` (``toonctl train export``: no extractor needed)."""
    return load_objective(SketchSettings(**values), with_extractor=False)
