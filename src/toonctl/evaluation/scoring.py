"""Every metric of one clip and engine, and which metrics cannot run here and why.

Per clip and engine, over the ``T - 2`` in-between frames only (the key frames are given, not generated);
frames are the 8-bit pictures that were written (real and generated alike), and the engine's key frames are
replaced by the real ones first (``toonctl interpolate``'s default ``--exact-keys``):

* ``lpips``: LPIPS v0.1 AlexNet (``toonctl.metrics.LPIPS``) of each generated frame against the real frame,
  mean over frames (lower is better);
* ``psnr``: ``10 log10(1 / MSE)`` on [0, 1] RGB per frame, capped at 100 dB (identical frames), mean over frames;
* ``ssim``: Gaussian-window SSIM (``toonctl.metrics.ssim``) per frame, mean over frames;
* ``clip_img``: cosine of the CLIP ViT-H-14 image embeddings of each generated frame and its real frame, mean
  over frames (``toonctl.models.clip_scoring``; the whole frame squashed to 224x224);
* ``clip_txt``: cosine of each generated frame's CLIP embedding and the clip's caption's, mean over frames
  (no value for a clip without a caption);
* ``cpbd``: CPBD sharpness (``toonctl.evaluation.cpbd``) of each generated frame, mean over the frames that
  have an edge block (higher is sharper).

Per engine, over all clips (``EvalReport`` averages the per-clip values above over the clips that have one):

* ``fvd``: Fréchet distance between the I3D features of the engine's videos and of the real videos (the whole
  window, key frames included, 224x224);
* ``kvd``: the unbiased polynomial-kernel MMD² between the same feature sets.

The real frames' own ``cpbd`` and ``clip_txt`` are reported as a reference row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FRAME_METRICS = ("lpips", "psnr", "ssim", "clip_img", "clip_txt", "cpbd")
SET_METRICS = ("fvd", "kvd")
PSNR_CAP_DB = 100.0


def to_signed(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(values) / len(values) if values else None


@dataclass
class MetricSuite:
    """The models behind the metrics; a model that is None has its reason in ``unavailable``."""

    lpips: torch.nn.Module | None = None
    clip: object | None = None  # CLIPScorer
    i3d: object | None = None  # I3DFeatures
    unavailable: dict[str, str] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _captions: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        *,
        lpips_dir: Path | None = None,
        clip_weights: Path | None = None,
        clip_config=None,
        clip_reason: str = "",
        i3d_path: Path | None = None,
        device: torch.device | str = "cpu",
    ) -> MetricSuite:
        """Load what is on disk; record why the rest is missing (nothing is downloaded).

        ``clip_weights`` is an official-layout checkpoint holding the CLIP towers (``clip_reason`` says why
        there is none). A checkpoint without the towers' heads makes the CLIP metrics unavailable, not an error.
        """
        from toonctl.errors import CheckpointError
        from toonctl.evaluation.i3d import I3DFeatures, find_i3d
        from toonctl.metrics import LPIPS, find_lpips_weights

        device = torch.device(device)
        suite = cls(device=device)
        found = find_lpips_weights(lpips_dir)
        if found.available:
            suite.lpips = LPIPS.from_files(found.alexnet, found.linear).to(device)
        else:
            suite.unavailable["lpips"] = found.reason
        if clip_weights is None:
            reason = clip_reason or "no checkpoint with the CLIP towers; give --clip-weights model.ckpt"
            suite.unavailable["clip_img"] = suite.unavailable["clip_txt"] = reason
        else:
            from toonctl.models.clip_scoring import CLIPScorer

            try:
                suite.clip = CLIPScorer.from_checkpoint(clip_weights, clip_config, device=device)
            except CheckpointError as exc:
                reason = f"{clip_weights}: {str(exc).splitlines()[0]}; give --clip-weights model.ckpt (official)"
                suite.unavailable["clip_img"] = suite.unavailable["clip_txt"] = reason
        location = find_i3d(i3d_path)
        if location.path is None:
            suite.unavailable["fvd"] = suite.unavailable["kvd"] = location.reason
        else:
            suite.i3d = I3DFeatures.load(location.path, device)
        return suite

    # ---------------------------------------------------------------------------------------- per clip

    def caption_embedding(self, caption: str) -> torch.Tensor | None:
        if self.clip is None or not caption:
            return None
        if caption not in self._captions:
            self._captions[caption] = self.clip.embed_texts([caption])[0]
        return self._captions[caption]

    def reference(self, real: np.ndarray, caption: str) -> dict:
        """The real window's own scores (``cpbd``, ``clip_txt``) and what the engines are compared with:
        the in-betweens' CLIP embeddings and the window's I3D features."""
        inner = real[1:-1]
        result: dict = {"cpbd": _mean(cpbd_frames(inner)), "clip_txt": None, "embeddings": None, "features": None}
        if self.clip is not None:
            result["embeddings"] = self.clip.embed_images(to_signed(inner).to(self.device))
            text = self.caption_embedding(caption)
            if text is not None:
                result["clip_txt"] = float((result["embeddings"] @ text).mean())
        result["features"] = self.features(real)
        return result

    def score(self, real: np.ndarray, fake: np.ndarray, caption: str, reference: dict) -> dict:
        """The frame metrics of one engine's window ``fake`` against ``real`` (both ``(T, H, W, 3)`` uint8)."""
        from toonctl.metrics import psnr, ssim

        if real.shape != fake.shape:
            raise ValueError(f"generated frames {fake.shape} do not match the real ones {real.shape}")
        real_t, fake_t = to_signed(real[1:-1]).to(self.device), to_signed(fake[1:-1]).to(self.device)
        real_u, fake_u = (real_t.double() + 1) / 2, (fake_t.double() + 1) / 2
        row: dict = {
            "psnr": _mean(psnr(fake_u, real_u).clamp(max=PSNR_CAP_DB).tolist()),
            "ssim": _mean(ssim(fake_u, real_u).tolist()) if min(real.shape[1:3]) >= 11 else None,
            "lpips": None,
            "clip_img": None,
            "clip_txt": None,
            "cpbd": _mean(cpbd_frames(fake[1:-1])),
        }
        if self.lpips is not None:
            row["lpips"] = _mean(self.lpips(fake_t, real_t).tolist())
        if self.clip is not None:
            embeddings = self.clip.embed_images(fake_t)
            row["clip_img"] = float((embeddings * reference["embeddings"]).sum(-1).mean())
            text = self.caption_embedding(caption)
            if text is not None:
                row["clip_txt"] = float((embeddings @ text).mean())
        return row

    def features(self, frames: np.ndarray) -> np.ndarray | None:
        """The I3D feature row of one window ``(T, H, W, 3)`` uint8, or None without I3D."""
        if self.i3d is None:
            return None
        video = to_signed(frames).transpose(0, 1).unsqueeze(0)  # (1, 3, T, H, W)
        return self.i3d(video)[0].numpy()


def cpbd_frames(frames: np.ndarray) -> list[float]:
    """CPBD of each ``(H, W, 3)`` uint8 frame (NaN for frames without an edge block)."""
    from toonctl.evaluation.cpbd import cpbd

    return [cpbd(frame) for frame in frames]


def set_metrics(features: list[np.ndarray], real: list[np.ndarray]) -> tuple[dict, str]:
    """FVD and KVD of one engine's feature rows against the real ones: ``({"fvd", "kvd"}, reason if none)``."""
    from toonctl.evaluation.frechet import frechet_distance_of_features
    from toonctl.evaluation.kernel import mmd2_unbiased

    if len(features) < 2 or len(real) < 2:
        return {"fvd": None, "kvd": None}, "FVD and KVD need at least two clips"
    a, b = np.stack(features), np.stack(real)
    return {"fvd": frechet_distance_of_features(a, b), "kvd": mmd2_unbiased(a, b)}, ""
