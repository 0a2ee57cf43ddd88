"""Mean optical-flow magnitude of a clip, for the static-shot filter (the paper drops "videos with low
average optical flow magnitude"; it used RAFT, OpenCV's DIS flow here needs no model).

The flow (DIS, its "fast" preset: a third of "medium"'s time, means within 10% of it on the test
footage) runs on grey frames at the analysis width; the magnitude is rescaled to pixels per frame at a
256-px-wide frame (``FLOW_REFERENCE_WIDTH``), so one threshold fits every resolution. Pairs of held
frames (``holds``) count as zero motion without computing a flow. The mean is over every consecutive
pair of the clip (motion per frame time), estimated on at most ``max_pairs`` evenly spread moving pairs.
"""

from __future__ import annotations

import numpy as np

from toonctl.dataset import deps
from toonctl.dataset.settings import FLOW_REFERENCE_WIDTH


def mean_flow(gray: np.ndarray, held: np.ndarray, max_pairs: int) -> float:
    """Mean flow magnitude of ``(T, H, W)`` uint8 grey frames; ``held``: ``(T - 1,)`` bool, pair is a hold.

    Returns:
        pixels per frame at ``FLOW_REFERENCE_WIDTH``; 0.0 for a clip of one frame or only holds.
    """
    pairs = len(gray) - 1
    moving = np.flatnonzero(~held)
    if pairs < 1 or len(moving) == 0:
        return 0.0
    if len(moving) > max_pairs:
        moving = moving[np.linspace(0, len(moving) - 1, max_pairs).round().astype(int)]
    cv2 = deps.cv2()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    magnitudes = [float(np.linalg.norm(dis.calc(gray[t], gray[t + 1], None), axis=-1).mean()) for t in moving]
    moving_share = (~held).sum() / pairs  # holds are zero motion
    return float(np.mean(magnitudes) * moving_share * FLOW_REFERENCE_WIDTH / gray.shape[2])
