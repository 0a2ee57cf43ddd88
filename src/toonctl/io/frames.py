"""Key drawings in: read an image file, fit it to the model's frame size, turn it into a [-1, 1] tensor.

Reimplements the image side of ToonCrafter's ``scripts/evaluation/inference.py::load_data_prompts``:
``Image.open(path).convert("RGB")``, ``Resize(min(size))`` + ``CenterCrop(size)``, ``ToTensor`` and
``Normalize(0.5, 0.5)``. Differences, on purpose:

* transparent drawings are composited over white (``convert("RGB")`` just drops the alpha channel, which
  turns the transparent background into whatever colour happens to be stored under it, often black);
* 16-bit images are scaled to 8 bits instead of clipped, and the EXIF orientation is applied;
* ``crop`` always covers the target. The official transform matches the image's shorter side to the
  target's shorter side, which pads black bars when the drawing is narrower than the target (a 4:3
  drawing into 320x512); for drawings at least as wide as the target both give the same pixels.

torch is imported inside the functions that need it, so the CLI can import this module cheaply.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from toonctl.errors import InputImageError, RequestedSizeError
from toonctl.presets import FIT_MODES

if TYPE_CHECKING:
    import torch

MIN_SIDE = 64  # one latent cell is 8 px; below 64 px a drawing has almost nothing left for the model
MAX_PIXELS = 64_000_000  # far above any sensible key drawing, and below PIL's decompression-bomb warning
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
NATIVE_SIZE = (320, 512)  # (H, W) the model was trained at
SIZE_MULTIPLE = 64
# The largest output frame: 1 megapixel (6.4x the native 320x512, e.g. 1024x1024 or 640x1536), at most
# 2048 px on a side. The model degrades far from its training size, and memory grows with the area.
MAX_OUTPUT_PIXELS = 1024 * 1024
MAX_OUTPUT_SIDE = 2048
WHITE = (255, 255, 255)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


# --------------------------------------------------------------------------------------------- reading


def read_image(path: str | Path) -> Image.Image:
    """Read an image file as an 8-bit RGB picture, upright.

    The first frame of an animated GIF/WebP/APNG is used. Conversions:

    ==============================  ==============================================================
    mode                            becomes
    ==============================  ==============================================================
    RGBA, LA, PA, P/L/RGB with a    composited over white (a drawing on a transparent background
    transparent colour              is a drawing on paper)
    P, CMYK, YCbCr, L, 1            ``convert("RGB")``
    I;16 (L/B/N), I                 16-bit grey scaled to 8 bits, ``round(v * 255 / 65535)``
    F (32-bit float)                refused: the value range is unknown
    ==============================  ==============================================================

    The EXIF orientation (phone photos of drawings) is applied.

    Raises:
        InputImageError: a one-line message naming the file: missing, a folder, empty, not an image,
            truncated or corrupt, smaller than ``MIN_SIDE`` on a side, or larger than ``MAX_PIXELS``.
    """
    path = Path(path)
    _check_is_file(path)
    with _open_decoded(path) as img:
        try:
            upright = ImageOps.exif_transpose(img)  # always a new image, detached from the file
        except Exception as exc:  # a broken EXIF block can raise anything from the TIFF-tag parser
            raise InputImageError(f"cannot read {path}: unreadable EXIF orientation ({exc})") from exc
    return _to_rgb(upright, path)


def _check_is_file(path: Path) -> None:
    if not path.exists():
        raise InputImageError(f"cannot read {path}: no such file")
    if path.is_dir():
        raise InputImageError(f"cannot read {path}: it is a folder, not an image file")
    if path.stat().st_size == 0:
        raise InputImageError(f"cannot read {path}: the file is empty")


def _open_and_load(path: Path) -> Image.Image:
    """Open ``path`` and decode its first frame completely, so a truncated file fails here.

    The caller closes the returned image (a multi-frame file stays open for seeking).
    """
    img = None
    try:
        with warnings.catch_warnings():
            # PIL only *warns* between MAX_IMAGE_PIXELS and twice that; make it an error instead.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            _check_dimensions(img, path)
            img.load()  # Image.open is lazy: a truncated file only fails when the pixels are decoded
    except BaseException:
        if img is not None:
            img.close()
        raise
    return img


def _open_decoded(path: Path) -> Image.Image:
    """``_open_and_load`` with every failure as a one-line ``InputImageError``."""
    too_large = f"cannot read {path}: the image is too large (the limit is {MAX_PIXELS / 1e6:g} megapixels)"
    try:
        return _open_and_load(path)
    except InputImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InputImageError(too_large) from exc
    except MemoryError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise InputImageError(f"cannot read {path}: not an image (or a format Pillow cannot read)") from exc
    except Exception as exc:  # decoders of untrusted files raise OSError, SyntaxError, ValueError, struct.error...
        raise InputImageError(f"cannot read {path}: the image is truncated or corrupt ({exc})") from exc


def _check_dimensions(img: Image.Image, path: Path) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise InputImageError(
            f"cannot read {path}: the image is too large ({height}x{width} = {width * height / 1e6:.1f} megapixels;"
            f" the limit is {MAX_PIXELS / 1e6:g})"
        )
    if min(width, height) < MIN_SIDE:
        raise InputImageError(
            f"cannot read {path}: the image is too small ({height}x{width} HxW); key frames need at least"
            f" {MIN_SIDE} pixels on each side"
        )


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """The conversions of the table in ``read_image``."""
    if img.mode == "F":
        raise InputImageError(f"cannot read {path}: 32-bit float images are not supported (save it as 8 or 16 bit)")
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_l(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_over_white(img.convert("RGBA"))
    if img.mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except ValueError as exc:  # a mode PIL cannot convert to RGB (e.g. LAB, HSV)
        raise InputImageError(f"cannot read {path}: unsupported colour mode {img.mode}") from exc


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """Scale 16-bit grey to 8 bits: ``round(v * 255 / 65535)``, so 65535 -> 255 and 32768 -> 128.

    PIL's own ``convert("L")`` clips at 255 instead, which turns a 16-bit drawing nearly all white. Mode "I"
    (32-bit int) is what older Pillows give 16-bit PNGs; its values are taken as 16-bit and clipped to 65535.
    A 16-bit transparent colour key is dropped (rare, and it cannot be scaled exactly).
    """
    values = np.asarray(img).astype(np.float64)
    scaled = np.rint(np.clip(values, 0, 65535) * (255 / 65535)).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _composite_over_white(rgba: Image.Image) -> Image.Image:
    paper = Image.new("RGBA", rgba.size, WHITE + (255,))
    return Image.alpha_composite(paper, rgba).convert("RGB")


# --------------------------------------------------------------------------------------------- fitting


def fit_image(
    img: Image.Image, size: tuple[int, int], mode: str = "crop", *, pad_color: tuple[int, int, int] = WHITE
) -> Image.Image:
    """Fit ``img`` to exactly ``size`` = (H, W).

    Args:
        img: an RGB picture (as returned by ``read_image``).
        size: (H, W) of the result.
        mode: one of ``FIT_MODES``:
            ``crop``: scale (PIL bilinear) so the picture covers the target, then cut the centre out; for a
            picture at least as wide as the target this is the official ``Resize(min(size))`` +
            ``CenterCrop(size)`` pixel for pixel (torchvision calls ``PIL.Image.resize`` with BILINEAR, which
            low-pass filters when shrinking; its rounding is reproduced too).
            ``pad``: scale so the whole picture fits inside, and centre it on ``pad_color``.
            ``resize``: squash or stretch to the target (the aspect ratio changes).
        pad_color: the RGB border colour of ``pad`` (default white paper).

    Returns:
        an RGB picture of width W and height H.
    """
    height, width = size
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {height}x{width}")
    if (img.height, img.width) == (height, width):
        return img.copy()
    if mode == "crop":
        return _scale_and_centre_crop(img, height, width)
    if mode == "pad":
        return _scale_and_pad(img, height, width, pad_color)
    return img.resize((width, height), Image.Resampling.BILINEAR)


def _scale_and_centre_crop(img: Image.Image, height: int, width: int) -> Image.Image:
    h, w = img.height, img.width
    # The side that binds is scaled to the target exactly; the other one is truncated like torchvision's
    # ``int(short_target * long / short)``, but never below the target (float error).
    if w * height >= width * h:
        new_h, new_w = height, max(width, int(height * w / h))
    else:
        new_h, new_w = max(height, int(width * h / w)), width
    scaled = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - height) / 2.0))  # torchvision's CenterCrop offsets (round half to even)
    left = int(round((new_w - width) / 2.0))
    return scaled.crop((left, top, left + width, top + height))


def _scale_and_pad(img: Image.Image, height: int, width: int, pad_color: tuple[int, int, int]) -> Image.Image:
    h, w = img.height, img.width
    if w * height >= width * h:
        new_h, new_w = max(1, round(width * h / w)), width
    else:
        new_h, new_w = height, max(1, round(height * w / h))
    scaled = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height), tuple(pad_color))
    canvas.paste(scaled, ((width - new_w) // 2, (height - new_h) // 2))
    return canvas


def choose_size(
    images_hw: Sequence[tuple[int, int]],
    requested: tuple[int, int] | None = None,
    *,
    multiple: int = SIZE_MULTIPLE,
    native: tuple[int, int] = NATIVE_SIZE,
) -> tuple[int, int]:
    """The (H, W) every frame of the output gets.

    A requested size is used as given once validated. Otherwise the size follows the *first* key frame's
    aspect ratio, choosing between three shapes with about the native pixel count (the model was trained
    at 320x512 and degrades away from that many pixels): the native landscape size (320x512), the same
    turned portrait (512x320), or a square of about the same area rounded to ``multiple`` (384x384). The
    nearest aspect ratio in log scale wins, so the landscape/square boundary is sqrt(1.6) ~ 1.26: 4:3 and
    wider get 320x512, 5:4 and squarer get 384x384.

    Args:
        images_hw: (H, W) of each key frame, in order.
        requested: an explicit (H, W), or None to choose.
        multiple: sides must be multiples of this (the VAE's 8 x the UNet's 8 = 64).
        native: the size the model was trained at, (H, W).

    Raises:
        RequestedSizeError: ``requested`` is not a pair of positive multiples of ``multiple``, or larger
            than ``MAX_OUTPUT_PIXELS`` / ``MAX_OUTPUT_SIDE``.
    """
    if requested is not None:
        height, width = requested
        if height * width > MAX_OUTPUT_PIXELS or max(height, width) > MAX_OUTPUT_SIDE:
            raise RequestedSizeError(
                f"frame size {height}x{width} (HxW) is too large: at most {MAX_OUTPUT_PIXELS / 2**20:g} megapixel"
                f" and {MAX_OUTPUT_SIDE} px on a side (the model was trained at {native[0]}x{native[1]})"
            )
        if height > 0 and width > 0 and height % multiple == 0 and width % multiple == 0:
            return int(height), int(width)
        near_h, near_w = (max(multiple, round(side / multiple) * multiple) for side in (height, width))
        raise RequestedSizeError(
            f"frame size {height}x{width} (HxW) is not supported: height and width must be multiples of {multiple}"
            f" (the nearest valid size is {near_h}x{near_w})"
        )
    landscape = (min(native), max(native))
    square_side = max(multiple, round(math.sqrt(native[0] * native[1]) / multiple) * multiple)
    candidates = [landscape, landscape[::-1], (square_side, square_side)]
    if not images_hw:
        return tuple(native)
    h, w = images_hw[0]
    aspect = math.log(w / h)
    return min(candidates, key=lambda hw: abs(aspect - math.log(hw[1] / hw[0])))


# --------------------------------------------------------------------------------------------- tensors


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB picture as a ``(3, H, W)`` float32 tensor in [-1, 1].

    Computed as ``(uint8 / 255 - 0.5) / 0.5``, the same operations as torchvision's ``ToTensor`` +
    ``Normalize(0.5, 0.5)``, so the values are bit-identical to the official preprocessing.
    """
    import torch

    pixels = torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8))  # (H, W, 3)
    return pixels.permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)  # (3, H, W)


@dataclass(frozen=True)
class KeyframeFit:
    """What fitting did to one key frame, for the caller's warnings.

    Attributes:
        path: the file.
        original_size: (H, W) as read (after the EXIF rotation).
        action: ``kept`` (already the right size), ``scaled`` (same aspect ratio), or the fit mode's
            ``cropped`` / ``padded`` / ``squashed``.
        area_fraction: ``cropped``: the share of the scaled picture cut away; ``padded``: the share of
            the frame that is border; ``squashed``: the relative change of the aspect ratio; else 0.
    """

    path: Path
    original_size: tuple[int, int]
    action: str
    area_fraction: float


@dataclass(frozen=True)
class Keyframes:
    """Key frames ready for a pipeline.

    Attributes:
        tensors: one ``(3, H, W)`` float32 tensor in [-1, 1] per key frame.
        size: (H, W) shared by all of them.
        fits: what fitting did to each one (same order).
    """

    tensors: list[torch.Tensor]
    size: tuple[int, int]
    fits: list[KeyframeFit]


def describe_fit(original_size: tuple[int, int], size: tuple[int, int], mode: str) -> tuple[str, float]:
    """``(action, area_fraction)`` of fitting a picture of ``original_size`` to ``size`` (see ``KeyframeFit``)."""
    (h, w), (height, width) = original_size, size
    if (h, w) == (height, width):
        return "kept", 0.0
    source_aspect, target_aspect = w / h, width / height
    if w * height == width * h:
        return "scaled", 0.0
    if mode == "resize":
        return "squashed", abs(target_aspect / source_aspect - 1.0)
    # Cropping cuts, and padding adds, the same share: 1 - (narrower aspect / wider aspect).
    share = 1.0 - min(source_aspect, target_aspect) / max(source_aspect, target_aspect)
    return ("cropped" if mode == "crop" else "padded"), share


def load_keyframes(
    paths: Sequence[str | Path],
    size: tuple[int, int] | None = None,
    fit: str = "crop",
    *,
    multiple: int = SIZE_MULTIPLE,
    native: tuple[int, int] = NATIVE_SIZE,
    pad_color: tuple[int, int, int] = WHITE,
) -> Keyframes:
    """Read key frames and fit them all to one size.

    Args:
        paths: the image files, in order.
        size: (H, W), or None to let ``choose_size`` pick from the first key frame.
        fit: how a key frame of another aspect ratio is fitted (``FIT_MODES``).
        multiple, native: passed to ``choose_size``.
        pad_color: the border colour of ``fit="pad"``.

    Returns:
        ``Keyframes(tensors, size, fits)``; tensors are ``(3, H, W)`` in [-1, 1].
    """
    images = [read_image(p) for p in paths]
    originals = [(img.height, img.width) for img in images]
    size = choose_size(originals, size, multiple=multiple, native=native)
    tensors = [to_tensor(fit_image(img, size, fit, pad_color=pad_color)) for img in images]
    fits = [KeyframeFit(Path(p), hw, *describe_fit(hw, size, fit)) for p, hw in zip(paths, originals, strict=True)]
    return Keyframes(tensors, size, fits)


# --------------------------------------------------------------------------------------------- folders


def natural_key(path: str | Path) -> tuple:
    """Sort key putting ``frame2.png`` before ``frame10.png`` (digit runs compare as numbers, case ignored)."""
    name = Path(path).name
    parts = re.split(r"(\d+)", name.lower())
    # re.split with a capturing group alternates text, number, text, ...: same types at the same positions.
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts)) + (name,)


def list_frame_files(directory: str | Path) -> list[Path]:
    """The image files of ``directory`` (``IMAGE_SUFFIXES``, any case) in natural order.

    Hidden files (``.name``) and sub-folders are skipped; an empty list means no images.

    Raises:
        InputImageError: ``directory`` is missing or not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "not a folder" if directory.exists() else "no such folder"
        raise InputImageError(f"cannot list frames in {directory}: {what}")
    files = [
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=natural_key)
