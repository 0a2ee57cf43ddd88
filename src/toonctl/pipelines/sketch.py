"""Sketch control on top of the interpolation pipeline: sketch-guided in-betweens, reference-based
colorization, and line-art extraction.

None of this exists in the official repository (its README still lists "sketch control and colorization"
as to do); the released ``sketch_encoder.ckpt`` is used the way both community ports use it (mattyamonaca
``lvdm/models/ddpm3d.py::apply_model``, kijai's copy of it): the encoder sees the noisy latent, the sketch and
the step's timestep, and its 13 residuals, times one control scale, are added after the UNet's middle block
and to its 12 skips, in both guidance branches. Everything samples through ``InterpolationPipeline`` and
``interpolate_chain``: ``SketchControl`` is the ``control`` stage they accept, so one piece of code serves
plain, sketch-guided and colorizing runs. Tensors in, tensors out: no file I/O, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toonctl.errors import OptionError
from toonctl.pipelines.chain import ChainSettings, inbetween_indices, interpolate_chain

DEFAULT_CONTROL_SCALE = 0.6  # both community UIs' default (range 0..1)
CONTEXT_CHOICES = ("text", "all")
MIN_FRAMES = 4  # the fewest frames the interpolation pipeline makes in one run


@dataclass(frozen=True)
class SketchGuidance:
    """Sketches for a run and how they steer: ``hints`` ``{frame index: (1, H, W)}`` white lines on black in
    [0, 1]; ``scale``, ``dense``, ``context`` as ``SketchControl``'s."""

    hints: Mapping[int, torch.Tensor]
    scale: float = DEFAULT_CONTROL_SCALE
    dense: bool = False
    context: str = "text"

    def options(self) -> dict:
        """The keyword arguments of ``sketch_interp`` and ``colorize``."""
        return {"scale": self.scale, "dense": self.dense, "context": self.context}


class SketchControl:
    """The sketch encoder as the pipeline's ``control`` stage (``samplers.guidance.ControlStage``).

    **Which frames get control.** Sparse (default): only frames with a sketch. The others get no residual
    at all -- a per-frame mask on the residuals, 1 for sketched frames, 0 for the rest -- so they are
    generated exactly as plain interpolation would generate them, steered only through their neighbours
    (the UNet's temporal layers). The encoder is frame-independent (no temporal layer), so it runs on the
    sketched frames alone and zeros are filled in elsewhere: the same numbers as masking a full run, at K/T
    of the cost. Dense (``dense=True``, the community ports' behaviour): a frame without a sketch gets a
    blank hint (all zeros); that still yields non-zero residuals (the convs' biases), i.e. "no lines here"
    rather than "no opinion", which fights the motion between the key frames.

    **Scale.** Every residual is multiplied by ``scale``. A scale of 0, or no controlled frame, returns
    None: the UNet then runs exactly as without a stage (bit-identical output).

    **Context.** ``"text"`` (default): the encoder's cross-attention sees the 77 prompt tokens; ``"all"``:
    the whole context of its guidance branch, prompt and image tokens (77 + 16 T = 333). The community
    ports disagree (mattyamonaca's SD ControlNet code attends to all 333; kijai's lvdm-based copy to 77).
    We take the text tokens because (1) the checkpoint's cross-attentions have only ``to_k``/``to_v``, the
    projections the UNet applies to *text* tokens -- image tokens have their own (``to_k_ip``/``to_v_ip``)
    that the encoder lacks, so pushing Resampler outputs through the text projections into the same
    softmax is a mix it could only handle if trained on it; (2) the encoder consumes this model's latents
    and conditioning, so it was most likely trained in the authors' lvdm code base, where a cross-attention
    without image weights cuts its context to the first 77 tokens (``lvdm/modules/attention.py``
    ``CrossAttention.forward``): fed the UNet's context there, it saw exactly the text; the 333-token
    variant is what the SD code of a port does with the same input. ``"all"`` stays available to compare.

    Args:
        encoder: a ``SketchEncoder`` matching the UNet (same levels and channels).
        hints: ``{model frame: (1, H, W) or (H, W)}`` white lines on black in [0, 1], at 8x the latent size.
        num_frames: T, the frames of the run this stage steers.
        scale: the control scale (>= 0).
        dense: blank hints for frames without a sketch (see above).
        context: ``"text"`` or ``"all"`` (see above).
        text_tokens: how many leading context tokens are text (77).
        device: where the encoder runs (a device map may put it apart from the UNet); None: the latent's device.
    """

    def __init__(
        self,
        encoder: nn.Module,
        hints: Mapping[int, torch.Tensor],
        num_frames: int,
        *,
        scale: float = DEFAULT_CONTROL_SCALE,
        dense: bool = False,
        context: str = "text",
        text_tokens: int = 77,
        device: torch.device | str | None = None,
    ) -> None:
        if context not in CONTEXT_CHOICES:
            raise OptionError(
                f"context must be one of {', '.join(CONTEXT_CHOICES)}, got {context!r}", option="sketch_context"
            )
        if not scale >= 0:
            raise OptionError(f"control scale must be >= 0, got {scale}", option="control_scale")
        outside = sorted(i for i in hints if not 0 <= i < num_frames)
        if outside:
            raise OptionError(
                f"sketches for frames {outside} of a {num_frames}-frame run (frames 0..{num_frames - 1})",
                option="sketches",
            )
        self.encoder = encoder
        self.hints = {i: h.reshape(1, *h.shape[-2:]) for i, h in sorted(hints.items())}
        sizes = {tuple(h.shape[-2:]) for h in self.hints.values()}
        if len(sizes) > 1:
            raise ValueError(f"sketches differ in size: {sorted(sizes)}")
        self.num_frames = num_frames
        self.scale = float(scale)
        self.dense = dense
        self.context = context
        self.text_tokens = text_tokens
        self.device = None if device is None else torch.device(device)
        self.frames = list(range(num_frames)) if dense else sorted(self.hints)
        self._stack: tuple[tuple, torch.Tensor] | None = None

    @property
    def frame_mask(self) -> torch.Tensor:
        """``(T,)`` bool: which frames receive control residuals."""
        mask = torch.zeros(self.num_frames, dtype=torch.bool)
        mask[self.frames] = True
        return mask

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor] | None:
        """The UNet's ``control_residuals`` for one call (see ``ControlStage``), or None for no control.

        Args:
            x: ``(B, 4, T, h, w)`` the noisy latent.
            t: ``(B,)`` timesteps.
            context: ``(B, L, C)`` the guidance branch's context (text tokens first).

        Returns:
            None, or one ``(B*T, C_i, h_i, w_i)`` tensor per UNet skip plus the middle block's.
        """
        if self.scale == 0 or not self.frames:
            return None
        b, _, t_frames, h, w = x.shape
        if t_frames != self.num_frames:
            raise ValueError(f"this sketch control is for {self.num_frames} frames, the latent has {t_frames}")
        dtype = next(self.encoder.parameters()).dtype
        device = self.device or x.device
        hint = self._hint_stack((8 * h, 8 * w), device, dtype).expand(b, -1, -1, -1, -1)  # (B, 1, K, H, W)
        tokens = context[:, : self.text_tokens] if self.context == "text" else context
        latent = x if len(self.frames) == t_frames else x[:, :, self.frames]  # (B, 4, K, h, w)
        residuals = self.encoder(latent.to(device), hint, t.to(device), tokens.to(device))  # each (B*K, C_i, h_i, w_i)
        return [self._spread(r.to(x.device) * self.scale, b) for r in residuals]

    def _hint_stack(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The controlled frames' hints as ``(1, 1, K, H, W)``, blank where a dense frame has no sketch."""
        key = (size, device, dtype)
        if self._stack is None or self._stack[0] != key:
            for index, hint in self.hints.items():
                if tuple(hint.shape[-2:]) != size:
                    got = tuple(hint.shape[-2:])
                    raise ValueError(f"the sketch of frame {index} is {got}, the frames are {size} (8x the latent)")
            blank = torch.zeros(1, *size)
            stack = torch.stack([self.hints.get(i, blank) for i in self.frames], dim=1)  # (1, K, H, W)
            self._stack = (key, stack[None].to(device, dtype))
        return self._stack[1]

    def _spread(self, residual: torch.Tensor, batch: int) -> torch.Tensor:
        """``(B*K, C, h, w)`` of the controlled frames -> ``(B*T, C, h, w)``, zeros for the other frames."""
        k = len(self.frames)
        if k == self.num_frames:
            return residual
        full = residual.new_zeros(batch, self.num_frames, *residual.shape[1:])
        full[:, self.frames] = residual.view(batch, k, *residual.shape[1:])
        return full.flatten(0, 1)  # batch-major, as fold_frames


# --------------------------------------------------------------------------------------------- sketch-interp


def chain_frame_map(num_keys: int, num_generated: int, settings: ChainSettings) -> list[list[tuple[int, int]]]:
    """For each frame of ``interpolate_chain``'s output, the ``(segment, model frame)`` pairs it stands for.

    In-betweens map to one model frame; a key frame shared by two segments maps to the last frame of one and
    the first of the next (with ``loop``, the first key also closes the last segment).
    """
    if num_keys < 2:
        raise ValueError("a chain needs at least two key frames")
    keep = inbetween_indices(num_generated, settings.inbetweens)
    segments = num_keys - 1 + int(settings.loop)
    last = num_generated - 1
    frames: list[list[tuple[int, int]]] = []
    for s in range(segments):
        frames.append([(s, 0)] + ([(s - 1, last)] if s else []))
        frames.extend([(s, i)] for i in keep)
    if settings.loop:
        frames[0].append((segments - 1, last))
    else:
        frames.append([(segments - 1, last)])
    return frames


def split_sketches(
    sketches: Mapping[int, torch.Tensor], frame_map: Sequence[Sequence[tuple[int, int]]]
) -> list[dict[int, torch.Tensor]]:
    """Output-frame sketches -> one ``{model frame: hint}`` per segment (see ``chain_frame_map``).

    Raises:
        ValueError: a sketch for a frame past the end of the output.
    """
    segments = 1 + max(s for pairs in frame_map for s, _ in pairs)
    per_segment: list[dict[int, torch.Tensor]] = [{} for _ in range(segments)]
    for index, hint in sorted(sketches.items()):
        if not 0 <= index < len(frame_map):
            raise ValueError(
                f"a sketch for frame {index}, but the output has {len(frame_map)} frames (0..{len(frame_map) - 1})"
            )
        for segment, model_frame in frame_map[index]:
            per_segment[segment][model_frame] = hint
    return per_segment


def sketch_segment_kwargs(
    encoder: nn.Module,
    sketches: Mapping[int, torch.Tensor],
    num_keys: int,
    num_generated: int,
    settings: ChainSettings,
    **control_options,
) -> Callable[[int], dict]:
    """``segment index -> {"control": SketchControl}`` for ``interpolate_chain(segment_kwargs=...)``.

    Args:
        encoder: the sketch encoder.
        sketches: ``{output frame index: (1, H, W) hint}`` (frames numbered as the chain writes them).
        num_keys, num_generated: key frames in the chain; frames per segment (the model's 16).
        settings: the chain's settings (in-betweens and loop decide the numbering).
        control_options: ``scale``, ``dense``, ``context``, ``text_tokens`` of ``SketchControl``.
    """
    per_segment = split_sketches(sketches, chain_frame_map(num_keys, num_generated, settings))
    stages = [SketchControl(encoder, hints, num_generated, **control_options) for hints in per_segment]
    return lambda index: {"control": stages[index]}


def sketch_interp(
    pipe,
    encoder: nn.Module,
    keyframes: Sequence[torch.Tensor],
    sketches: Mapping[int, torch.Tensor],
    prompt: str = "",
    settings: ChainSettings | None = None,
    *,
    scale: float = DEFAULT_CONTROL_SCALE,
    dense: bool = False,
    context: str = "text",
    generator: torch.Generator | None = None,
    on_segment: Callable[[int, int], None] | None = None,
    **pipeline_kwargs,
) -> torch.Tensor:
    """``interpolate_chain`` with sketches steering the in-betweens.

    Args:
        pipe: the ``InterpolationPipeline``.
        encoder: its ``SketchEncoder``.
        keyframes: ``(3, H, W)`` in [-1, 1], two or more.
        sketches: ``{output frame index: (1, H, W) hint}`` white lines on black in [0, 1].
        prompt, settings, generator, on_segment, pipeline_kwargs: as ``interpolate_chain``.
        scale, dense, context: see ``SketchControl``.

    Returns:
        ``(N, 3, H, W)`` frames in [-1, 1].
    """
    settings = settings or ChainSettings()
    num_generated = pipeline_kwargs.get("num_frames") or pipe.config.unet.temporal_length
    segment_kwargs = sketch_segment_kwargs(
        encoder, sketches, len(keyframes), num_generated, settings,
        scale=scale, dense=dense, context=context, text_tokens=pipe.config.unet.text_context_len,
        device=_encoder_device(pipe),
    )  # fmt: skip
    return interpolate_chain(
        pipe, keyframes, prompt, settings,
        generator=generator, on_segment=on_segment, segment_kwargs=segment_kwargs, **pipeline_kwargs,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- colorize


def colorize_passes(num_frames: int, window: int) -> list[tuple[int, ...]]:
    """The model runs that colour ``num_frames`` frames, at most ``window`` frames each, in order.

    A run covers consecutive frames (or, for a key pass, spread-out ones) and needs its first and last
    frame coloured beforehand. Up to ``window`` frames: one run. More: the sequence is cut into
    ``W = ceil((n - 1) / (window - 1))`` equal windows that share their boundary frames; the boundaries are
    coloured first, by a run over the boundary frames alone (recursively if there are more than
    ``window``), then each window runs between two coloured boundaries. Adjacent windows are conditioned on
    the *same* boundary picture, and every boundary comes from one run conditioned on the references, so
    colours cannot drift from window to window.

    Returns:
        Tuples of frame indices, increasing within a tuple; every frame but 0 and n-1 is in the inside of
        exactly one tuple, and a tuple's ends are 0, n-1 or inside an earlier tuple.
    """
    if num_frames < 2:
        raise ValueError(f"colorizing needs at least 2 frames, got {num_frames}")
    if window < MIN_FRAMES:
        raise OptionError(f"window must be at least {MIN_FRAMES} frames, got {window}", option="window")

    def plan(positions: tuple[int, ...]) -> list[tuple[int, ...]]:
        if len(positions) <= window:
            return [positions]
        span = len(positions) - 1
        count = math.ceil(span / (window - 1))
        cuts = [math.floor(k * span / count + 0.5) for k in range(count + 1)]
        passes = plan(tuple(positions[c] for c in cuts))
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            passes += plan(positions[a : b + 1])
        return passes

    return plan(tuple(range(num_frames)))


def run_frames(count: int) -> tuple[int, list[int]]:
    """``(frames of the model run, model frame of each position)`` for a pass over ``count`` frames.

    Runs have at least ``MIN_FRAMES`` frames; a shorter pass is spread over them by nearest time (the
    model frames between get no sketch, hence no control).
    """
    frames = max(MIN_FRAMES, count)
    if count < 2:
        raise ValueError(f"a pass needs at least 2 frames, got {count}")
    return frames, [math.floor(j * (frames - 1) / (count - 1) + 0.5) for j in range(count)]


def colorize(
    pipe,
    encoder: nn.Module,
    refs: Sequence[torch.Tensor],
    sketches: Mapping[int, torch.Tensor],
    num_frames: int,
    prompt: str = "",
    *,
    window: int | None = None,
    scale: float = DEFAULT_CONTROL_SCALE,
    dense: bool = False,
    context: str = "text",
    generator: torch.Generator | None = None,
    on_pass: Callable[[int, int], None] | None = None,
    **pipeline_kwargs,
) -> torch.Tensor:
    """Coloured reference(s) + per-frame line art -> coloured frames.

    Frame ``i`` of the result is the colouring of sketch ``i``. ``refs[0]`` is frame 0, coloured.

    * **Two references**: ``refs[1]`` is the last frame, coloured. The model interpolates from one to the
      other with every frame's sketch as control: use it when the last pose or the colours (lighting,
      costume) differ from the first.
    * **One reference**: the first run gets it as both key frames (the model has no other coloured
      picture to go on) and the last frame is generated, not copied. Colours come from the one reference;
      the end of the sequence is pulled a little toward the reference's pose, so it suits cycles and
      moderate motion -- give a second reference when the last pose differs a lot.

    More than ``window`` frames are coloured in windows that share boundary frames (``colorize_passes``).

    Args:
        pipe: the ``InterpolationPipeline``.
        encoder: its ``SketchEncoder``.
        refs: one or two ``(3, H, W)`` coloured frames in [-1, 1].
        sketches: ``{frame index: (1, H, W) hint}``; a frame without one gets no control (or a blank hint
            with ``dense``).
        num_frames: frames to produce (>= 2).
        prompt: text prompt.
        window: most frames per model run (default and maximum: the model's 16).
        scale, dense, context: see ``SketchControl``.
        generator: source of every random draw; runs draw from it in order.
        on_pass: called with ``(index, count)`` before each model run.
        pipeline_kwargs: passed to ``pipe(...)`` (steps, guidance_scale, frame_stride, eta, callback, ...).

    Returns:
        ``(num_frames, 3, H, W)`` in [-1, 1]; frame 0 is ``refs[0]`` (and the last ``refs[1]``) exactly.
    """
    if not 1 <= len(refs) <= 2:
        raise OptionError(f"give one or two reference frames, got {len(refs)}", option="refs")
    longest = pipe.config.unet.temporal_length
    window = window or longest
    if window > longest:
        raise OptionError(f"window must be at most the model's {longest} frames, got {window}", option="window")
    known = {0: refs[0].float().cpu()}
    if len(refs) == 2:
        known[num_frames - 1] = refs[1].float().cpu()
    passes = [p for p in colorize_passes(num_frames, window) if any(i not in known for i in p)]
    options = dict(
        scale=scale, dense=dense, context=context, text_tokens=pipe.config.unet.text_context_len,
        device=_encoder_device(pipe),
    )  # fmt: skip
    for index, positions in enumerate(passes):
        if on_pass is not None:
            on_pass(index, len(passes))
        run_length, model_frames = run_frames(len(positions))
        hints = {m: sketches[p] for p, m in zip(positions, model_frames, strict=True) if p in sketches}
        stage = SketchControl(encoder, hints, run_length, **options)
        # Only the first pass can lack its last frame: one reference stands in for it.
        start, end = known[positions[0]], known.get(positions[-1], known[0])
        video = pipe(
            start, end, prompt, num_frames=run_length, control=stage, generator=generator, **pipeline_kwargs
        ).video[0]  # (3, T, H, W)
        video = video.clamp(-1, 1).transpose(0, 1).cpu()  # (T, 3, H, W)
        for position, model_frame in zip(positions, model_frames, strict=True):
            known.setdefault(position, video[model_frame])
    return torch.stack([known[i] for i in range(num_frames)])


def _encoder_device(pipe) -> torch.device | None:
    """Where the pipeline runs its sketch encoder component (None: a pipeline without placement)."""
    placement = getattr(pipe, "placement", None)
    return None if placement is None else placement.device_for("sketch_encoder")


# --------------------------------------------------------------------------------------------- extraction


@torch.no_grad()
def extract_line_art(
    extractor: nn.Module, frames: torch.Tensor, *, load_size: int = 512, batch_size: int = 4
) -> torch.Tensor:
    """Pictures -> line art with the sketch extractor (Anime2Sketch's recipe).

    Each picture is resized (bicubic, antialiased) to ``load_size`` x ``load_size``, run through the
    extractor, and the result resized back to the picture's size.

    Args:
        extractor: a ``SketchExtractor``.
        frames: ``(N, 3, H, W)`` RGB in [-1, 1].
        load_size: the square processing size (Anime2Sketch's default 512); a multiple of
            ``extractor.config.size_multiple``.
        batch_size: pictures per extractor call.

    Returns:
        ``(N, 1, H, W)`` float32 in [-1, 1], black lines on white.
    """
    multiple = extractor.config.size_multiple
    if load_size <= 0 or load_size % multiple:
        raise OptionError(f"load size must be a positive multiple of {multiple}, got {load_size}", option="load_size")
    weight = next(extractor.parameters())
    outputs = []
    for chunk in frames.split(batch_size):
        height, width = chunk.shape[-2:]
        square = F.interpolate(chunk.float(), size=(load_size, load_size), mode="bicubic", antialias=True)
        art = extractor(square.clamp(-1, 1).to(weight.device, weight.dtype)).float()
        art = F.interpolate(art, size=(height, width), mode="bicubic", antialias=True)
        outputs.append(art.clamp(-1, 1).cpu())
    return torch.cat(outputs)
