"""Line art from files to files, ``toonctl sketch``'s work: read pictures, run the sketch extractor, write.

The input is an image, a video or a folder of frames (``io.sketches.read_media``); the output one picture, a
folder of numbered PNGs or a video, written atomically. The extractor (Anime2Sketch, ``sketch_extractor.pth``)
is found like the model's other files (``weights.find_weights_file``). Frames come out numbered from 0 in
the input's order, so an output folder works as ``sketch-interp --sketches DIR``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toonctl.errors import OptionError

BATCH = 4  # pictures per extractor call


@dataclass
class LineArtResult:
    output: Path
    frames: int
    size: tuple[int, int]
    input_kind: str  # "image", "video" or "folder"
    seconds: float


def extract_line_art_files(
    source: Path,
    output: Path,
    *,
    extractor: Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    load_size: int = 512,
    fps: float | None = None,
    quality: int | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LineArtResult:
    """Write the line art of every picture of ``source`` to ``output``.

    Args:
        source, output: see the module docstring.
        extractor: the extractor's weights (None: ``sketch_extractor.pth`` in the weights folder).
        device, dtype: where and in which precision the extractor runs (``auto``: bf16 on GPU, fp32 on CPU).
        load_size: the square size the extractor works at (a multiple of its ``size_multiple``).
        fps: the output video's frame rate (None: the input's, else 8).
        quality: mp4/webm CRF.
        log: called with one line about what is loaded.
        progress: called with ``(pictures done, pictures)``.

    Raises:
        OptionError: a bad device, dtype or load size; InputImageError, OutputError, WeightsNotFoundError.
    """
    import numpy as np
    import torch

    from toonctl.device import resolve_device, resolve_dtype
    from toonctl.io.sketches import check_line_art_output, line_art_to_uint8, read_media, write_line_art
    from toonctl.models.sketch_extractor import load_sketch_extractor
    from toonctl.pipelines.sketch import extract_line_art
    from toonctl.weights import EXTRACTOR_FILES, find_weights_file

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    frames, source_fps, kind = read_media(source)  # (N, H, W, 3) uint8
    check_line_art_output(output, frames.shape[0])
    path = find_weights_file(extractor, EXTRACTOR_FILES, option="--extractor")
    if log is not None:
        log(f"Loading {path} on {torch_device} ({str(torch_dtype).removeprefix('torch.')})")
    net = load_sketch_extractor(path, device=torch_device, dtype=torch_dtype)
    multiple = net.config.size_multiple
    if load_size % multiple:
        raise OptionError(f"must be a multiple of {multiple}, got {load_size}", option="load_size")
    started = time.monotonic()
    arts = []
    for begin in range(0, frames.shape[0], BATCH):
        chunk = torch.from_numpy(np.array(frames[begin : begin + BATCH])).permute(0, 3, 1, 2)  # (n, 3, H, W)
        art = extract_line_art(net, chunk.float().div(127.5).sub(1), load_size=load_size)  # (n, 1, H, W)
        arts.append(line_art_to_uint8(art))
        if progress is not None:
            progress(begin + chunk.shape[0], frames.shape[0])
    written = write_line_art(np.concatenate(arts), output, fps=fps or source_fps or 8.0, quality=quality)
    h, w = frames.shape[1:3]
    return LineArtResult(Path(written), frames.shape[0], (h, w), kind, time.monotonic() - started)
