"""Reading, fitting and normalising key frames (``toonctl.io.frames``); every image is built in tmp_path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toonctl.errors import InputImageError, UnsupportedSizeError
from toonctl.io import frames
from toonctl.io.frames import (
    FIT_MODES,
    MIN_SIDE,
    choose_size,
    describe_fit,
    fit_image,
    list_frame_files,
    load_keyframes,
    natural_key,
    read_image,
    to_tensor,
)

RED, WHITE, BLACK = (255, 0, 0), (255, 255, 255), (0, 0, 0)


def solid(size_hw: tuple[int, int], color=RED, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (size_hw[1], size_hw[0]), color)


def save(img: Image.Image, path: Path, **options) -> Path:
    img.save(path, **options)
    return path


def noise_image(size_hw: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size_hw, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def pixel(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(img.getpixel((x, y)))


def read_error(path: Path) -> str:
    with pytest.raises(InputImageError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# --------------------------------------------------------------------------------------------- conversions


def test_rgb_png_is_read_unchanged(tmp_path):
    img = noise_image((64, 96))
    out = read_image(save(img, tmp_path / "a.png"))
    assert out.mode == "RGB" and out.size == (96, 64)
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_rgba_is_composited_over_white(tmp_path):
    img = Image.new("RGBA", (64, 64), (10, 20, 30, 0))  # fully transparent (its stored colour is not white)
    img.putpixel((1, 1), (10, 20, 30, 255))  # opaque
    img.putpixel((2, 2), (0, 0, 0, 128))  # half-transparent black
    out = read_image(save(img, tmp_path / "a.png"))
    assert out.mode == "RGB"
    assert pixel(out, 0, 0) == WHITE
    assert pixel(out, 1, 1) == (10, 20, 30)
    assert all(abs(v - 127) <= 1 for v in pixel(out, 2, 2))


def test_la_is_composited_over_white(tmp_path):
    img = Image.new("LA", (64, 64), (0, 0))
    img.putpixel((3, 3), (90, 255))
    out = read_image(save(img, tmp_path / "a.png"))
    assert pixel(out, 0, 0) == WHITE and pixel(out, 3, 3) == (90, 90, 90)


def test_palette_with_transparent_index_becomes_white(tmp_path):
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((5, 5), 1)
    out = read_image(save(img, tmp_path / "a.png", transparency=0))
    assert pixel(out, 0, 0) == WHITE and pixel(out, 5, 5) == RED


@pytest.mark.parametrize("mode, key, drawn", [("L", 0, 50), ("RGB", (1, 2, 3), (50, 60, 70))])
def test_a_transparent_colour_key_becomes_white(tmp_path, mode, key, drawn):
    img = Image.new(mode, (64, 64), key)
    img.putpixel((1, 1), drawn)
    out = read_image(save(img, tmp_path / "a.png", transparency=key))
    assert pixel(out, 0, 0) == WHITE and pixel(out, 1, 1)[0] == 50


def test_palette_without_transparency_is_converted(tmp_path):
    img = Image.new("P", (64, 64), 1)
    img.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    assert pixel(read_image(save(img, tmp_path / "a.png")), 0, 0) == (12, 34, 56)


@pytest.mark.parametrize("mode, value, expected", [("L", 77, (77, 77, 77)), ("1", 1, WHITE), ("1", 0, BLACK)])
def test_greyscale_and_bilevel_become_grey_rgb(tmp_path, mode, value, expected):
    out = read_image(save(Image.new(mode, (64, 64), value), tmp_path / "a.png"))
    assert out.mode == "RGB" and pixel(out, 0, 0) == expected


@pytest.mark.parametrize("dtype, suffix", [("<u2", ".png"), ("<u2", ".tif"), (">u2", ".tif")])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, dtype, suffix):
    values = np.zeros((64, 64), dtype=dtype)
    values[0, 0], values[0, 1], values[0, 2], values[0, 3] = 0, 32768, 65535, 257 * 100
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    out = read_image(save(img, tmp_path / f"a{suffix}"))
    assert [pixel(out, x, 0) for x in range(4)] == [(0,) * 3, (128,) * 3, (255,) * 3, (100,) * 3]


def test_32_bit_int_grey_is_taken_as_16_bit(tmp_path):
    values = np.array([[0, 32768, 65535, 70000]] * 64, dtype=np.int32).repeat(16, axis=1)
    path = save(Image.fromarray(values, "I"), tmp_path / "a.tif")
    with Image.open(path) as stored:
        assert stored.mode == "I"
    out = read_image(path)
    assert [pixel(out, x, 0)[0] for x in (0, 16, 32, 48)] == [0, 128, 255, 255]


def test_float_images_are_refused(tmp_path):
    path = save(Image.fromarray(np.ones((64, 64), np.float32), "F"), tmp_path / "f.tif")
    assert "32-bit float" in read_error(path)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    out = read_image(save(Image.new("CMYK", (64, 64), (0, 0, 0, 0)), tmp_path / "a.jpg", quality=100))
    assert out.mode == "RGB" and all(v >= 250 for v in pixel(out, 10, 10))


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (128, 64), WHITE)  # landscape as stored, left half red
    img.paste(RED, (0, 0, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = read_image(save(img, tmp_path / "a.png", exif=exif))
    assert out.size == (64, 128)  # portrait now
    assert pixel(out, 32, 5) == RED and pixel(out, 32, 122) == WHITE  # the left edge is now the top


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp", ".tiff", ".gif"])
def test_other_formats_are_read(tmp_path, suffix):
    out = read_image(save(solid((64, 80), (0, 0, 255)), tmp_path / f"a{suffix}"))
    assert out.mode == "RGB" and out.size == (80, 64)
    assert np.abs(np.asarray(out, dtype=int) - [0, 0, 255]).max() <= 8  # jpeg/webp are lossy


def test_animated_gif_gives_its_first_frame(tmp_path):
    first, second = solid((64, 64), RED), solid((64, 64), (0, 0, 255))
    path = save(first, tmp_path / "a.gif", save_all=True, append_images=[second], duration=100)
    assert pixel(read_image(path), 0, 0) == RED


# --------------------------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    assert "no such file" in read_error(tmp_path / "nope.png")


def test_folder_instead_of_file(tmp_path):
    assert "folder" in read_error(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty" in read_error(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a drawing\n")
    assert "not an image" in read_error(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path, suffix):
    path = save(noise_image((256, 256)), tmp_path / f"cut{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in read_error(path)


def test_truncated_images_stay_refused_globally(tmp_path):
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_tiny_image(tmp_path):
    path = save(solid((MIN_SIDE - 1, 200)), tmp_path / "tiny.png")
    assert "too small" in read_error(path)
    assert read_image(save(solid((MIN_SIDE, MIN_SIDE)), tmp_path / "ok.png")).size == (MIN_SIDE, MIN_SIDE)


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A valid small PNG whose header is rewritten to claim ``width`` x ``height`` (only the header is read)."""
    solid((64, 64)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC of "IHDR" + its 13 data bytes
    path.write_bytes(bytes(data))
    return path


def test_huge_image(tmp_path):
    assert "too large" in read_error(png_claiming_size(tmp_path / "huge.png", 8200, 8200))  # 67 Mpx


def test_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(frames, "MAX_PIXELS", 10**12)  # leave it to PIL's check (warns above 89 Mpx)
    assert "too large" in read_error(png_claiming_size(tmp_path / "bomb.png", 12000, 12000))


def test_pixel_limit_can_be_lowered(tmp_path, monkeypatch):
    monkeypatch.setattr(frames, "MAX_PIXELS", 64 * 64 - 1)
    assert "too large" in read_error(save(solid((64, 64)), tmp_path / "a.png"))


# --------------------------------------------------------------------------------------------- fitting


def marked_image(size_hw: tuple[int, int]) -> Image.Image:
    """White, with a black border row/column and a red 8x8 square in the centre."""
    h, w = size_hw
    img = solid(size_hw, WHITE)
    img.paste(BLACK, (0, 0, w, 1))
    img.paste(BLACK, (0, 0, 1, h))
    img.paste(RED, (w // 2 - 4, h // 2 - 4, w // 2 + 4, h // 2 + 4))
    return img


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize("source", [(320, 512), (100, 100), (600, 300), (333, 1001), (64, 64)])
def test_every_fit_gives_the_exact_size(mode, source):
    out = fit_image(marked_image(source), (320, 512), mode)
    assert out.size == (512, 320) and out.mode == "RGB"


@pytest.mark.parametrize("source", [(400, 1000), (300, 400), (1000, 500)])
def test_crop_keeps_the_centre_and_fills_the_frame(source):
    assert pixel(fit_image(marked_image(source), (320, 512), "crop"), 256, 160) == RED
    # covering: a 4:3 or portrait picture is scaled up to the width, not padded with black bars
    assert (np.asarray(fit_image(solid(source, RED), (320, 512), "crop")) == RED).all()


def test_crop_matches_the_official_resize_and_centre_crop():
    # torchvision on a 400x1000 (HxW) PIL image: Resize(320) -> PIL resize to 800x320 (W, H) BILINEAR;
    # CenterCrop((320, 512)) -> left = int(round((800 - 512) / 2.0)) = 144.
    img = noise_image((400, 1000))
    expected = img.resize((800, 320), Image.Resampling.BILINEAR).crop((144, 0, 656, 320))
    assert np.array_equal(np.asarray(fit_image(img, (320, 512), "crop")), np.asarray(expected))


def test_crop_rounds_the_offset_like_torchvision():
    # 385 rows scaled to 385 (already 512 wide): top = int(round(65 / 2.0)) = 32 (half to even).
    img = noise_image((385, 512))
    expected = img.crop((0, 32, 512, 352))
    assert np.array_equal(np.asarray(fit_image(img, (320, 512), "crop")), np.asarray(expected))


def test_pad_keeps_everything_and_fills_with_the_pad_colour():
    out = fit_image(solid((100, 100), RED), (320, 512), "pad")
    assert pixel(out, 256, 160) == RED and pixel(out, 256, 5) == RED  # scaled to the full height
    assert pixel(out, 5, 160) == WHITE and pixel(out, 506, 160) == WHITE
    blue = fit_image(solid((100, 100), RED), (320, 512), "pad", pad_color=(0, 0, 255))
    assert pixel(blue, 0, 0) == (0, 0, 255)


def test_resize_squashes_the_whole_picture():
    out = fit_image(marked_image((100, 100)), (320, 512), "resize")
    assert pixel(out, 256, 160) == RED and pixel(out, 0, 100) == BLACK and pixel(out, 100, 0) == BLACK


def test_unknown_fit_mode():
    with pytest.raises(ValueError, match="crop, pad, resize"):
        fit_image(solid((64, 64)), (64, 64), "stretch")


def test_describe_fit():
    assert describe_fit((320, 512), (320, 512), "crop") == ("kept", 0.0)
    assert describe_fit((640, 1024), (320, 512), "pad") == ("scaled", 0.0)
    action, share = describe_fit((512, 512), (320, 512), "crop")
    assert action == "cropped" and share == pytest.approx(1 - 1 / 1.6)
    assert describe_fit((512, 512), (320, 512), "pad")[0] == "padded"
    assert describe_fit((512, 512), (320, 512), "resize") == ("squashed", pytest.approx(0.6))


# --------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "images, expected",
    [
        ([(320, 512)], (320, 512)),
        ([(1080, 1920)], (320, 512)),
        ([(600, 800)], (320, 512)),  # 4:3 is nearer 1.6 than 1 in log scale
        ([(800, 1000)], (384, 384)),  # 5:4
        ([(700, 700)], (384, 384)),
        ([(1920, 1080)], (512, 320)),
        ([(1000, 1000), (320, 512)], (384, 384)),  # the first key frame decides
        ([], (320, 512)),
    ],
)
def test_choose_size_follows_the_first_key_frame(images, expected):
    assert choose_size(images) == expected


def test_choose_size_uses_a_valid_request():
    assert choose_size([(1000, 1000)], (256, 640)) == (256, 640)


def test_choose_size_refuses_other_sizes_and_suggests_the_nearest():
    with pytest.raises(UnsupportedSizeError) as info:
        choose_size([(320, 512)], (300, 500))
    assert "multiples of 64" in str(info.value) and "320x512" in str(info.value)
    with pytest.raises(UnsupportedSizeError, match="64x64"):
        choose_size([], (0, 10))


def test_choose_size_with_another_grid_and_native_size():
    assert choose_size([(100, 100)], multiple=32, native=(256, 256)) == (256, 256)
    assert choose_size([(100, 200)], multiple=32, native=(256, 256)) == (256, 256)
    assert choose_size([], (96, 160), multiple=32) == (96, 160)


# --------------------------------------------------------------------------------------------- tensors


def test_to_tensor_maps_to_minus_one_one():
    img = Image.new("RGB", (3, 1))
    img.putpixel((0, 0), (0, 255, 128))
    img.putpixel((1, 0), (255, 0, 0))
    tensor = to_tensor(img)
    assert tensor.shape == (3, 1, 3) and tensor.dtype == torch.float32
    assert tensor[:, 0, 0].tolist() == [-1.0, 1.0, pytest.approx(1 / 255, abs=1e-6)]
    assert tensor[:, 0, 1].tolist() == [1.0, -1.0, -1.0]  # channel order is R, G, B
    # bit-identical to ToTensor() + Normalize(0.5, 0.5)
    expected = torch.tensor([0, 255, 128], dtype=torch.float32).div(255).sub(0.5).div(0.5)
    assert torch.equal(tensor[:, 0, 0], expected)


def test_load_keyframes_fits_everything_to_one_size(tmp_path):
    a = save(solid((320, 512), RED), tmp_path / "a.png")
    b = save(solid((600, 600), (0, 0, 255)), tmp_path / "b.png")
    loaded = load_keyframes([a, b], fit="crop")
    assert loaded.size == (320, 512)
    assert [t.shape for t in loaded.tensors] == [(3, 320, 512)] * 2
    assert [f.action for f in loaded.fits] == ["kept", "cropped"]
    assert loaded.fits[1].original_size == (600, 600) and loaded.fits[1].path == b
    assert loaded.tensors[1][:, 100, 100].tolist() == [-1.0, -1.0, 1.0]
    padded = load_keyframes([b, a], size=(320, 512), fit="pad")
    assert padded.fits[0].action == "padded" and padded.tensors[0][:, 0, 0].tolist() == [1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------------- folders


def test_list_frame_files_in_natural_order(tmp_path):
    for name in ["frame10.png", "frame2.png", "Frame1.PNG", "frame2b.jpg", ".hidden.png", "notes.txt", "x.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "frame3.png").mkdir()
    names = [p.name for p in list_frame_files(tmp_path)]
    assert names == ["Frame1.PNG", "frame2.png", "frame2b.jpg", "frame10.png"]


def test_natural_key_sorts_numbers_by_value():
    names = ["shot_10", "shot_9", "shot_09b", "shot_1", "Shot_2"]
    assert sorted(names, key=natural_key) == ["shot_1", "Shot_2", "shot_9", "shot_09b", "shot_10"]


def test_list_frame_files_of_a_missing_folder(tmp_path):
    with pytest.raises(InputImageError, match="no such folder"):
        list_frame_files(tmp_path / "nope")
