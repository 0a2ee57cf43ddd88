"""CPBD (Narvekar & Karam 2011) on synthetic pictures: sharp beats blurred, edge cases give NaN."""

from __future__ import annotations

import math

import numpy as np

from toonctl.evaluation import cpbd as C


def _cartoon(seed: int = 0, size=(128, 192)) -> np.ndarray:
    """Flat-colour rectangles on a flat background, with hard edges."""
    rng = np.random.default_rng(seed)
    img = np.full(size, 30.0)
    for _ in range(10):
        y, x = rng.integers(0, size[0] - 30), rng.integers(0, size[1] - 30)
        img[y : y + 30, x : x + 30] = rng.integers(80, 250)
    return img


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    g = C.gaussian_kernel(sigma)
    return C.correlate_separable(img, g, g)


def test_cpbd_ranks_sharp_above_blurred():
    img = _cartoon()
    scores = [C.cpbd(img), C.cpbd(_blur(img, 0.6)), C.cpbd(_blur(img, 2.0))]
    assert scores[0] > 0.9
    assert scores[0] > scores[1] >= scores[2]
    assert scores[2] < 0.1


def test_cpbd_of_rgb_uses_the_grey_levels():
    img = _cartoon(1)
    rgb = np.repeat(img[..., None], 3, axis=-1).astype(np.uint8)
    assert C.cpbd(rgb) == C.cpbd(np.round(img) * (0.2989 + 0.5870 + 0.1140))


def test_cpbd_is_nan_without_edge_blocks_or_smaller_than_a_block():
    assert math.isnan(C.cpbd(np.full((128, 128), 100.0)))
    assert math.isnan(C.cpbd(_cartoon(size=(48, 256))))


def test_edge_widths_as_the_release_measures_them():
    step = np.array([0, 0, 0, 0, 100, 100, 100, 100] + [100] * 8, dtype=float)
    ramp = np.array([0, 0, 0, 25, 50, 75, 100, 100] + [100] * 8, dtype=float)
    gray = np.stack([step] * 5 + [ramp] * 5)
    everywhere = np.ones(gray.shape, dtype=bool)
    widths = C.edge_widths(gray, everywhere)
    # a one-pixel step is 2 wide from either side of it (the search starts one pixel beside the edge)
    assert widths[2, 3] == 2 and widths[2, 4] == 2
    # the ramp's middle: from the minimum at column 2 to the maximum at column 6
    assert widths[7, 4] == 4
    assert widths[0, 3] == 0 and widths[9, 4] == 0 and widths[2, 0] == 0  # nothing on the border
    falling = C.edge_widths(gray[:, ::-1].copy(), everywhere)
    assert falling[2, 11] == 2 and falling[7, 11] == 4  # mirrored: falling edges, same widths
    # edges whose gradient points elsewhere get no width (a zero horizontal gradient counts as 0°, as released)
    diagonal = 10.0 * np.add.outer(np.arange(8), np.arange(8))
    assert not C.edge_widths(diagonal, np.ones((8, 8), dtype=bool)).any()


def test_hysteresis_keeps_exactly_the_components_touching_a_strong_pixel():
    rng = np.random.default_rng(5)
    weak = rng.random((40, 50)) < 0.45
    strong = weak & (rng.random((40, 50)) < 0.03)
    got = C._hysteresis(weak, strong)
    # brute force: grow from the strong pixels through 8-neighbours until nothing changes
    kept = strong.copy()
    while True:
        padded = np.pad(kept, 1)
        grown = np.zeros_like(kept)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= padded[dy : dy + 40, dx : dx + 50]
        grown &= weak
        if np.array_equal(grown, kept):
            break
        kept = grown
    np.testing.assert_array_equal(got, kept)
