"""CPBD, the cumulative probability of blur detection (Narvekar & Karam, IEEE TIP 20(9), 2011): a no-reference
sharpness index in [0, 1], higher is sharper. ToonCrafter's Table 1 reports it for the generated frames.

The published algorithm, written here in numpy (no scipy, no OpenCV):

1. The picture becomes grey levels in [0, 255] (``0.2989 R + 0.5870 G + 0.1140 B``, MATLAB's ``rgb2gray``,
   rounded for 8-bit pictures).
2. Edge pixels for the block decision: Canny as MATLAB's ``edge(I, 'canny')`` sets it up: a Gaussian of
   sigma √2, Sobel gradients, non-maximum suppression in four directions, hysteresis with the high threshold at
   the 70th percentile of the normalised gradient magnitude and the low one at 0.4 x high (8-connected).
3. Edge pixels whose width is measured: vertical edges as MATLAB's ``edge(I, 'sobel', 'vertical')`` finds
   them: ``gx²`` (horizontal Sobel) above four times its image mean, thinned to horizontal local maxima.
4. The width of each such edge whose gradient points left or right (Marziliano et al. 2002): along its
   row, from the local extremum on one side to the one on the other (rising edge: the minimum on the left
   to the maximum on the right; falling edge: the reverse), searched from one pixel beside the edge, as the
   authors' release does (a one-pixel step is 2 wide; see ``edge_widths``).
5. The picture is cut into 64x64 blocks (a partial block at the right or bottom edge is left out). A block
   with more than 0.2 % Canny edge pixels is an edge block; its contrast ``C = max - min`` grey level (truncated) sets
   the just-noticeable-blur width ``w_JNB`` = 5 when ``C <= 50``, else 3.
6. Every measured edge of an edge block gets the probability of detecting its blur
   ``P = 1 - exp(-(w / w_JNB)^3.6)``; CPBD is the fraction of these edges whose P, rounded to a percent, is
   at most ``P_JNB`` = 63 %.

A picture without an edge block has no CPBD (NaN); so does one smaller than a block. Steps 4-6 follow the
authors' MATLAB release (Canny edges decide the blocks, Sobel edges get widths); differences are possible in
the Canny and Sobel details (filter sizes, borders: replicated here), which MATLAB's ``edge`` does not publish.
"""

from __future__ import annotations

import numpy as np

BLOCK = 64
EDGE_BLOCK_FRACTION = 0.002
BETA = 3.6
P_JNB = 0.63
CANNY_SIGMA = 2**0.5
CANNY_NON_EDGE_FRACTION = 0.7
CANNY_LOW_RATIO = 0.4
SOBEL_SCALE = 4.0
MAX_SIDE = 101  # the release searches at most 101 pixels each side of an edge


def cpbd(image: np.ndarray) -> float:
    """CPBD of one picture: ``(H, W, 3)`` RGB or ``(H, W)`` grey, uint8 or floats in [0, 255]; NaN without
    an edge block (see the module docstring)."""
    gray = to_gray(image)
    height, width = gray.shape
    if height < BLOCK or width < BLOCK:
        return float("nan")
    canny = canny_edges(gray)
    widths = edge_widths(gray, vertical_sobel_edges(gray))
    probabilities = []
    for top in range(0, height - BLOCK + 1, BLOCK):
        for left in range(0, width - BLOCK + 1, BLOCK):
            rows, cols = slice(top, top + BLOCK), slice(left, left + BLOCK)
            if canny[rows, cols].sum() <= EDGE_BLOCK_FRACTION * BLOCK * BLOCK:
                continue
            block = gray[rows, cols]
            contrast = int(block.max() - block.min())  # truncated, as the release indexes its table
            width_jnb = 5.0 if contrast <= 50 else 3.0
            block_widths = widths[rows, cols]
            block_widths = block_widths[block_widths > 0]
            probabilities.append(1.0 - np.exp(-((block_widths / width_jnb) ** BETA)))
    if not probabilities:
        return float("nan")
    p = np.concatenate(probabilities)
    if p.size == 0:
        return float("nan")
    return float((np.round(p * 100) <= P_JNB * 100).mean())


def to_gray(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB or ``(H, W)`` -> ``(H, W)`` float64 grey levels (MATLAB ``rgb2gray`` weights)."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[-1] == 3:
        gray = x @ np.array([0.2989, 0.5870, 0.1140])
        return np.round(gray) if np.asarray(image).dtype == np.uint8 else gray  # rgb2gray keeps uint8 levels
    if x.ndim == 2:
        return x
    raise ValueError(f"expected an (H, W, 3) or (H, W) picture, got {x.shape}")


# ------------------------------------------------------------------------------------------- filtering


def _shifted(x: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """``x`` shifted by (dy, dx) out of its ``pad``-pixel replicated border (same shape as the unpadded input)."""
    h, w = x.shape[0] - 2 * pad, x.shape[1] - 2 * pad
    return x[pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def correlate_separable(image: np.ndarray, column: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Correlation of ``(H, W)`` with ``column[:, None] * row[None, :]`` (odd lengths), replicated border."""
    out = image
    for kernel, axis in ((row, 1), (column, 0)):
        radius = len(kernel) // 2
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(2)], mode="edge")
        size = out.shape[axis]
        acc = np.zeros_like(out)
        for i, weight in enumerate(kernel):
            if weight:
                acc += weight * (padded[:, i : i + size] if axis == 1 else padded[i : i + size])
        out = acc
    return out


def sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel derivatives ``(gx, gy)``: rightwards and downwards increases are positive."""
    smooth, diff = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    return correlate_separable(gray, smooth, diff), correlate_separable(gray, diff, smooth)


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    return taps / taps.sum()


# ------------------------------------------------------------------------------------------- edges


def canny_edges(gray: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool Canny edge map (see step 2 of the module docstring); all False on a flat picture."""
    g = gaussian_kernel(CANNY_SIGMA)
    gx, gy = sobel(correlate_separable(gray, g, g))
    magnitude = np.hypot(gx, gy)
    peak = magnitude.max()
    if peak <= 0:
        return np.zeros(gray.shape, dtype=bool)
    magnitude = magnitude / peak
    high = float(np.quantile(magnitude, CANNY_NON_EDGE_FRACTION))
    low = CANNY_LOW_RATIO * high
    thin = _non_maximum_suppression(magnitude, gx, gy)
    return _hysteresis(thin & (magnitude > low), thin & (magnitude > high))


def _non_maximum_suppression(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Pixels at least as strong as both neighbours across the edge (the gradient direction in 4 sectors)."""
    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0  # 0..180: the direction up to sign
    sector = (np.round(angle / 45.0).astype(int)) % 4  # 0: horizontal, 1: 45°, 2: vertical, 3: 135°
    padded = np.pad(magnitude, 1, mode="constant")
    keep = np.zeros(magnitude.shape, dtype=bool)
    # (dy, dx) of one neighbour along the gradient; rows grow downwards, and gy is a downward increase
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        forward = _shifted(padded, dy, dx, 1)
        backward = _shifted(padded, -dy, -dx, 1)
        keep |= (sector == s) & (magnitude >= forward) & (magnitude >= backward)
    return keep & (magnitude > 0)


def _hysteresis(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """The 8-connected components of ``weak`` that contain a ``strong`` pixel.

    Components are found over horizontal runs of pixels: two runs of neighbouring rows touch when their
    column ranges overlap or meet diagonally; touching runs are merged with a union-find.
    """
    if not strong.any():
        return np.zeros_like(weak)
    weak = weak | strong
    h, w = weak.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = weak
    change = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    rows, starts = np.nonzero(change == 1)
    _, ends = np.nonzero(change == -1)  # same row-major order: the k-th end closes the k-th run
    stride = w + 2
    key_start, key_end = rows * stride + starts, rows * stride + ends
    # runs of the next row touching run i: end_j >= start_i and start_j <= end_i (8-connected)
    lo = np.searchsorted(key_end, (rows + 1) * stride + starts, side="left")
    hi = np.searchsorted(key_start, (rows + 1) * stride + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    first = np.repeat(np.arange(len(rows)), counts)
    second = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(len(rows))])
    run_of_pixel = np.cumsum(np.concatenate([change[:, :-1] == 1], axis=0).ravel()).reshape(h, w) - 1
    strong_roots = np.unique(roots[run_of_pixel[strong]])
    return weak & np.isin(roots, strong_roots)[np.clip(run_of_pixel, 0, None)]


def vertical_sobel_edges(gray: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: vertical edges (step 3 of the module docstring)."""
    gx, _ = sobel(gray)
    energy = gx * gx
    cutoff = SOBEL_SCALE * energy.mean()
    if cutoff <= 0:
        return np.zeros(gray.shape, dtype=bool)
    padded = np.pad(energy, 1, mode="edge")
    left, right = _shifted(padded, 0, -1, 1), _shifted(padded, 0, 1, 1)
    return (energy > cutoff) & (energy > left) & (energy >= right)


def edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64: the Marziliano width of each edge pixel of ``edges`` (0 elsewhere).

    As the authors' release measures it: only edges whose gradient (``numpy.gradient``) points left or right
    (its angle rounded to a multiple of 45° is 0 or ±180°; a zero horizontal gradient counts as 0°) and that
    are not on the picture's border get a width. For a rising edge at column ``c`` the width is ``c - q + p - c``
    with ``q`` the first column left of ``c - 1`` (included) where the row stops falling leftwards and ``p`` the
    first column right of ``c + 1`` (included) where it stops rising (the reverse for a falling edge), each side
    at most 101. A one-pixel step is 2 wide. All columns are computed at once with running minima/maxima.
    """
    h, w = gray.shape
    cols = np.broadcast_to(np.arange(w), (h, w))
    ahead = np.zeros((h, w))
    ahead[:, :-1] = np.diff(gray, axis=1)  # ahead[c] = I[c+1] - I[c]
    behind = np.zeros((h, w))
    behind[:, 1:] = np.diff(gray, axis=1)  # behind[c] = I[c] - I[c-1]
    last, first = cols == w - 1, cols == 0

    def right_end(stop: np.ndarray) -> np.ndarray:
        """For each column c: the first p >= c + 1 where ``stop``, minus c."""
        marks = np.where(stop | last, cols, w - 1)
        nearest = np.minimum.accumulate(marks[:, ::-1], axis=1)[:, ::-1]
        shifted = np.concatenate([nearest[:, 1:], np.full((h, 1), w - 1)], axis=1)
        return np.minimum(shifted - cols, MAX_SIDE)

    def left_end(stop: np.ndarray) -> np.ndarray:
        """For each column c: c minus the last q <= c - 1 where ``stop``."""
        marks = np.where(stop | first, cols, 0)
        nearest = np.maximum.accumulate(marks, axis=1)
        shifted = np.concatenate([np.zeros((h, 1), dtype=nearest.dtype), nearest[:, :-1]], axis=1)
        return np.minimum(cols - shifted, MAX_SIDE)

    rising = left_end(behind <= 0) + right_end(ahead <= 0)  # back to the minimum, on to the maximum
    falling = left_end(behind >= 0) + right_end(ahead >= 0)  # back to the maximum, on to the minimum
    gy, gx = np.gradient(gray)
    angle = 45 * np.round(np.degrees(np.arctan2(gy, gx)) / 45)
    angle[gx == 0] = 0
    widths = np.where(angle == 0, rising, np.where(np.abs(angle) == 180, falling, 0)).astype(np.float64)
    inside = np.zeros((h, w), dtype=bool)
    inside[1:-1, 1:-1] = True
    return np.where(edges & inside, widths, 0.0)
