"""Decoder stages: model-space latents + the key frames' reference features -> video frames.

Reimplements the decode of ToonCrafter's ``lvdm/models/ddpm3d.py::decode_core`` (``perframe_ae``: all frames
of the clip through the dual-reference VAE decoder in one call) and the splice of
``scripts/evaluation/inference.py`` l.262-270 (a second, shorter pass for the two middle frames), as one
pluggable stage. The other variants are ours: ablations of the decoder (no references, no temporal mixing)
and chunked decoding, which bounds memory by decoding a few frames at a time.

Every stage is a ``FrameDecoder``: ``decoder(vae, latents, ref_context) -> video``. ``DECODERS`` names the
ones a user picks (``toonctl interpolate --decoder``, ``toonctl decode-bench --decoders``); ``parse_decoder``
also reads ``chunked:CHUNK[:OVERLAP]``. The precision is not part of a stage: a stage decodes in the VAE's
own dtype, so ``--dtype`` is the precision axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Protocol

import torch
from torch import nn

from toonctl.errors import OptionError
from toonctl.presets import DEFAULT_DECODER

DEFAULT_CHUNK = 8
DEFAULT_OVERLAP = 4
# The splice takes video frames T/2-1 and T/2 from positions T/2-2 and T/2-1 of the clip without frames 1 and
# T-2; those positions hold the same frames only from T = 6 on (at T = 4 the first key's decode would land on
# frame 1), so shorter clips are not spliced.
SPLICE_MIN_FRAMES = 6


class FrameDecoder(Protocol):
    """Latents to frames. ``name`` is what a user types to pick it."""

    name: str

    def __call__(self, vae: nn.Module, latents: torch.Tensor, ref_context: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode one clip.

        Args:
            vae: an ``AutoencoderKLDualRef``; the stage runs in its dtype, on the device of ``latents``.
            latents: ``(B, 4, T, h, w)`` in model space (VAE latent x ``vae.config.scale_factor``).
            ref_context: ``L + 1`` tensors ``(B, C_i, 2, H_i, W_i)``, the encoder hidden states of the first
                and last key frame.

        Returns:
            ``(B, 3, T, 8h, 8w)`` float32, about [-1, 1] (not clamped).
        """
        ...


@dataclass(frozen=True)
class DualRefDecoder:
    """The dual-reference decoder with its switches; the defaults are the official decode.

    Attributes:
        name: the registry name.
        splice: after the full pass, decode the clip again without frames 1 and T-2 and take the two middle
            frames from that pass (the official inference script does this at T = 16; here for T >= 6).
        references: inject the key frames' features (Combiners and fusion cross-attention).
        temporal: run the temporal layers (``time_stack`` of every VideoResBlock, ``time_mix_conv``).
        chunk: frames per decoder call; None decodes the whole clip at once.
        overlap: frames shared by consecutive chunks. Each output frame comes from the one chunk in which
            it sits farthest from a cut (the seam is the middle of the overlap); the other copy is dropped.
        slices: run the decoder's large layers in this many pieces (the per-frame ones by frames, the
            temporal convs by rows; the temporal norms still see the whole clip): a lower peak, the same
            frames (bit for bit where the kernels agree, within float32 rounding elsewhere: ``in_slices``).
            None runs each layer once; ``fit_to_memory`` picks a count from the free memory.
    """

    name: str = DEFAULT_DECODER
    splice: bool = True
    references: bool = True
    temporal: bool = True
    chunk: int | None = None
    overlap: int = 0
    slices: int | None = None

    def __post_init__(self) -> None:
        if self.chunk is not None and self.chunk < 1:
            raise OptionError(f"chunk must be >= 1 frame, got {self.chunk}", option="decoder")
        if self.slices is not None and self.slices < 1:
            raise OptionError(f"slices must be >= 1, got {self.slices}", option="decoder")
        if self.overlap < 0 or (self.chunk is not None and self.overlap >= self.chunk):
            raise OptionError(
                f"overlap must be in 0..chunk-1 (chunk={self.chunk}), got {self.overlap}", option="decoder"
            )

    @torch.no_grad()
    def __call__(self, vae: nn.Module, latents: torch.Tensor, ref_context: Sequence[torch.Tensor]) -> torch.Tensor:
        """See ``FrameDecoder.__call__``."""
        dtype = next(vae.parameters()).dtype
        z = (latents / vae.config.scale_factor).to(dtype)
        refs = [r.to(dtype) for r in ref_context] if self.references else None
        video = self._decode(vae, z, refs)
        num_frames = z.shape[2]
        if self.splice and num_frames >= SPLICE_MIN_FRAMES:
            keep = [0, *range(2, num_frames - 2), num_frames - 1]
            middle = self._decode(vae, z[:, :, keep], refs)
            half = num_frames // 2
            # frames half-1 and half of the video are positions half-2, half-1 of the shorter clip
            video[:, :, half - 1 : half + 1] = middle[:, :, half - 2 : half]
        return video

    def _decode(self, vae: nn.Module, z: torch.Tensor, refs: list[torch.Tensor] | None) -> torch.Tensor:
        """One pass over ``z`` ``(B, 4, T, h, w)`` (VAE space), in chunks when asked -> float32 video."""
        flags = {"references": self.references, "temporal": self.temporal, "slices": self.slices}
        num_frames = z.shape[2]
        if self.chunk is None or self.chunk >= num_frames:
            return vae.decode(z, refs, **flags).float()
        pieces = []
        for window, kept in chunk_plan(num_frames, self.chunk, self.overlap):
            # The Combiners add the references to the clip's first and last frame, wherever those fall.
            ref_frames = (0 if window.start == 0 else None, len(window) - 1 if window.stop == num_frames else None)
            out = vae.decode(z[:, :, window.start : window.stop], refs, ref_frames=ref_frames, **flags)
            pieces.append(out[:, :, kept.start - window.start : kept.stop - window.start].float())
        return torch.cat(pieces, dim=2)


def chunk_plan(num_frames: int, chunk: int, overlap: int) -> list[tuple[range, range]]:
    """``(window, kept)`` frame ranges covering ``num_frames`` frames with windows of ``chunk`` frames.

    Windows start every ``chunk - overlap`` frames; the last one is aligned to the end, so every window has
    ``chunk`` frames (the temporal norms see equally many frames everywhere) and the last overlap may be
    larger. Consecutive windows split their overlap in the middle: ``kept`` ranges tile ``0..num_frames``.
    """
    if chunk >= num_frames:
        return [(range(num_frames), range(num_frames))]
    stride = chunk - overlap
    starts = list(range(0, num_frames - chunk, stride)) + [num_frames - chunk]
    windows = [range(s, s + chunk) for s in starts]
    seams = [(later.start + earlier.stop) // 2 for earlier, later in pairwise(windows)]
    bounds = [0, *seams, num_frames]
    return [(w, range(a, b)) for w, (a, b) in zip(windows, pairwise(bounds), strict=True)]


# The peak of a dual-reference decode pass above the weights, in top-level feature maps (``vae.ch`` x H x W
# elements) per frame of the clip: in one call per layer, and in ``s`` pieces, where it is the full-clip
# tensors that remain plus one piece's share. Measured on the CPU, fp32, full-size VAE, glibc's allocator
# (``benchmarks/bench_decode_memory.py``; docs/performance.md): 8.0 maps whole; 5.5, 5.2, 4.5 in 4, 8, 16.
WHOLE_MAPS_PER_FRAME = 8.5
SLICED_MAPS_PER_FRAME = 4.5
PIECE_MAPS_PER_FRAME = 4.5  # divided by the number of pieces
SLICE_CHOICES = (2, 4, 8, 16)
# Of the free memory, the share a decode may plan to use: the estimate is a median, the allocator keeps
# some freed memory, and the page cache (the mapped weights the next segment needs) should keep some room.
DECODE_SHARE_OF_FREE = 0.8


def decode_peak_bytes(
    vae_channels: int, frame_size: tuple[int, int], num_frames: int, dtype_bytes: int, slices: int | None
) -> int:
    """Estimated peak bytes of one decode pass above the weights (see the constants above)."""
    height, width = frame_size
    clip_map = vae_channels * height * width * dtype_bytes * num_frames
    if slices is None or slices <= 1:
        return int(WHOLE_MAPS_PER_FRAME * clip_map)
    return int((SLICED_MAPS_PER_FRAME + PIECE_MAPS_PER_FRAME / slices) * clip_map)


def fit_to_memory(decoder: FrameDecoder, vae: nn.Module, latents: torch.Tensor, free: int | None) -> FrameDecoder:
    """``decoder``, or a copy that decodes in slices when the whole clip would not fit in ``free`` bytes.

    The fewest of ``SLICE_CHOICES`` pieces whose estimated peak fits in ``DECODE_SHARE_OF_FREE`` of ``free``
    (the most pieces when none does). Unchanged
    when ``free`` is unknown, the decode fits, or ``decoder`` is not a ``DualRefDecoder`` without slices of
    its own. Sliced frames equal the one-call frames up to float32 rounding (``in_slices``).
    """
    if free is None or not isinstance(decoder, DualRefDecoder) or decoder.slices is not None:
        return decoder
    dtype_bytes = next(vae.parameters()).element_size()
    frames = min(latents.shape[2], decoder.chunk or latents.shape[2]) * latents.shape[0]
    size = (latents.shape[-2] * 8, latents.shape[-1] * 8)
    budget = free * DECODE_SHARE_OF_FREE
    if decode_peak_bytes(vae.config.ch, size, frames, dtype_bytes, None) <= budget:
        return decoder
    for count in SLICE_CHOICES:
        if decode_peak_bytes(vae.config.ch, size, frames, dtype_bytes, count) <= budget:
            break
    return replace(decoder, slices=count)


def without_splice(decoder: FrameDecoder) -> FrameDecoder:
    """``decoder`` with its splice pass turned off (itself when it has none)."""
    if not getattr(decoder, "splice", False):
        return decoder
    return replace(decoder, name=f"{decoder.name}-nosplice", splice=False)  # type: ignore[type-var]


DECODERS: dict[str, FrameDecoder] = {
    d.name: d
    for d in (
        # the official decode: one pass, then the splice pass for the two middle frames
        DualRefDecoder(),
        DualRefDecoder(name="dualref-nosplice", splice=False),
        # ablations (one pass each): no reference injection; no temporal layers; neither, which makes every
        # frame independent, so it is decoded one frame at a time
        DualRefDecoder(name="norefs", splice=False, references=False),
        DualRefDecoder(name="spatial", splice=False, temporal=False),
        DualRefDecoder(name="perframe", splice=False, references=False, temporal=False, chunk=1),
        # the official decode in overlapping chunks: less memory, an approximation (see chunk_plan)
        DualRefDecoder(name="chunked", chunk=DEFAULT_CHUNK, overlap=DEFAULT_OVERLAP),
    )
}


def parse_decoder(spec: str) -> FrameDecoder:
    """A registry name, or ``chunked:CHUNK`` / ``chunked:CHUNK:OVERLAP`` (default overlap: half the chunk).

    Raises:
        OptionError: an unknown name or bad chunk numbers; the message lists the choices.
    """
    spec = spec.strip()
    if spec in DECODERS:
        return DECODERS[spec]
    name, _, args = spec.partition(":")
    if name == "chunked" and args:
        parts = args.split(":")
        if len(parts) <= 2 and all(p.isdigit() for p in parts):
            chunk = int(parts[0])
            overlap = int(parts[1]) if len(parts) == 2 else chunk // 2
            return replace(DECODERS["chunked"], name=f"chunked:{chunk}:{overlap}", chunk=chunk, overlap=overlap)
        raise OptionError(
            f"bad decoder {spec!r}: use chunked:CHUNK or chunked:CHUNK:OVERLAP (whole frame counts)", option="decoder"
        )
    raise OptionError(
        f"unknown decoder {spec!r}; choose one of {', '.join(DECODERS)} or chunked:CHUNK[:OVERLAP]", option="decoder"
    )
