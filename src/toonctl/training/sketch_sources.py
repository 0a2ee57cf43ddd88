"""Where the sketch encoder's training sketches come from: the sketch extractor on the clip's own frames (cached
per clip when asked), or a ``sketches/`` folder beside each clip.

Both give the encoder's input: per frame, white lines on black in [0, 1] at the video's size (what
``toonctl.io.sketches`` makes of a user's drawing at inference). The paper made its sketches with
Anime2Sketch (``sketch_extractor.pth``) from the original frames.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def line_art_to_hint(art: torch.Tensor) -> torch.Tensor:
    """The extractor's black lines on white in [-1, 1] -> the encoder's white lines on black in [0, 1]."""
    return ((1 - art) / 2).clamp(0, 1)


class ExtractedSketches:
    """Sketches made by the sketch extractor from a batch's own frames (the paper: Anime2Sketch on the clips).

    Args:
        extractor: a ``SketchExtractor`` (frozen).
        load_size: the extractor's square processing size (Anime2Sketch's 512; smaller is faster).
        cache_dir: optional folder: each clip's hints are stored there under a hash of its frames, the load
            size and the extractor's weights, and read back the next time the same frames come (epochs after
            the first skip the extractor). Files are written atomically.
    """

    def __init__(self, extractor: nn.Module, *, load_size: int = 512, cache_dir: str | Path | None = None) -> None:
        self.extractor = extractor
        self.load_size = load_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.hits = 0
        self.misses = 0
        # Another extractor (other weights) must not reuse the cache: its first layer's weights name it.
        first = next(extractor.parameters()).detach().float().cpu()
        self._extractor_id = hashlib.sha1(first.numpy().tobytes()).hexdigest()[:16]

    def _key(self, clip: torch.Tensor) -> str:
        quantised = ((clip.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        digest = hashlib.sha1(quantised.numpy().tobytes())
        digest.update(f"{tuple(clip.shape)}:{self.load_size}:{self._extractor_id}".encode())
        return digest.hexdigest()

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, 1, T, H, W)`` hints in [0, 1]."""
        from toonctl.pipelines.sketch import extract_line_art

        hints = []
        for clip in video:  # (3, T, H, W)
            path = self.cache_dir / f"{self._key(clip)}.pt" if self.cache_dir is not None else None
            if path is not None and path.is_file():
                hints.append(torch.load(path, map_location="cpu", weights_only=True).float())
                self.hits += 1
                continue
            art = extract_line_art(self.extractor, clip.transpose(0, 1), load_size=self.load_size)  # (T, 1, H, W)
            hint = line_art_to_hint(art).transpose(0, 1).contiguous()  # (1, T, H, W)
            self.misses += 1
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".tmp")
                torch.save(hint.half(), partial)  # lines are 8-bit data: half precision is exact enough
                partial.replace(path)
                hint = hint.half().float()  # the same numbers as a later cache hit
            hints.append(hint)
        return torch.stack(hints).to(video.device)


def sketch_folder_for(clip_path: str | Path) -> Path:
    """Where a clip's own sketches live: ``<clip's folder>/sketches/<clip name without suffix>/`` (clip
    discovery never takes a ``sketches`` folder for a clip)."""
    from toonctl.io.clips import SKETCH_FOLDER

    clip_path = Path(clip_path)
    return clip_path.parent / SKETCH_FOLDER / clip_path.stem


def read_folder_sketches(
    clip_path: str | Path, frame_indices: Sequence[int], size: tuple[int, int], fit: str = "crop"
) -> torch.Tensor:
    """A clip's sketches for the given source frames, from ``sketch_folder_for(clip_path)``.

    Files are named by their source frame index (``0007.png``, ``frame_7.png``: the ``--sketches`` naming
    of ``toonctl sketch-interp``); polarity is detected per file.

    Returns:
        ``(1, T, H, W)`` hints in [0, 1].

    Raises:
        DataError: no such folder, or a frame without its sketch (the message names both).
    """
    from toonctl.errors import DataError
    from toonctl.io.sketches import list_sketches, read_sketch

    folder = sketch_folder_for(clip_path)
    if not folder.is_dir():
        raise DataError(
            f"{clip_path}: no sketch folder {folder}",
            hint="put one sketch per frame there (named by frame index), or let the extractor make them",
        )
    files = list_sketches(folder)
    missing = [i for i in frame_indices if i not in files]
    if missing:
        raise DataError(f"{folder}: no sketch for frames {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    return torch.stack([read_sketch(files[i], size, fit)[0][0] for i in frame_indices])[None]
