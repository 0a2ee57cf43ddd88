"""Video features for FVD and KVD from the I3D TorchScript file the community uses (``i3d_torchscript.pt``).

That file (StyleGAN-V's port of the Kinetics-400 I3D of the original FVD code) is never downloaded: the user
gives it with ``--i3d`` or ``$TOONCTL_I3D``, or places it in ``<weights folder>/i3d/``. It is loaded with
``torch.jit.load`` (TorchScript holds code as well as tensors: load only a file you trust, as with any
TorchScript model).

Features are taken as the common FVD implementations take them: each video, ``(3, T, H, W)`` in [-1, 1], is
resized frame by frame to 224x224 (bilinear, no antialiasing, as TensorFlow's ``resize_bilinear`` in the
original FVD code; the aspect ratio is not kept), then ``detector(x, rescale=False, resize=False,
return_features=True)`` returns one 400-dimensional row per video (the logits before the softmax).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

I3D_ENV = "TOONCTL_I3D"
I3D_FILE = "i3d_torchscript.pt"
I3D_SIZE = 224


@dataclass(frozen=True)
class I3DLocation:
    """The I3D file to use, or None and why not."""

    path: Path | None
    reason: str = ""


def find_i3d(path: str | Path | None = None) -> I3DLocation:
    """Where the I3D TorchScript file is: ``path``, ``$TOONCTL_I3D``, ``<weights folder>/i3d/i3d_torchscript.pt``.

    A ``path`` that is given but missing is reported (not silently replaced by another place).
    """
    from toonctl.weights import weights_dir

    if path is not None:
        path = Path(path)
        return I3DLocation(path) if path.is_file() else I3DLocation(None, f"no I3D file at {path}")
    places = [Path(p) for p in (os.environ.get(I3D_ENV),) if p] + [weights_dir() / "i3d" / I3D_FILE]
    for place in places:
        if place.is_file():
            return I3DLocation(place)
    where = ", ".join(str(p) for p in places)
    return I3DLocation(
        None,
        f"no I3D TorchScript file (looked at {where}); give --i3d {I3D_FILE} (it is never downloaded)",
    )


class I3DFeatures:
    """An I3D TorchScript detector and the preprocessing FVD expects (see the module docstring)."""

    def __init__(self, detector: torch.jit.ScriptModule, device: torch.device | str = "cpu") -> None:
        self.detector = detector
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> I3DFeatures:
        import warnings

        from toonctl.errors import CheckpointError

        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the file comes in
                warnings.simplefilter("ignore", DeprecationWarning)
                detector = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # RuntimeError for anything that is not a TorchScript archive
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"cannot load the I3D TorchScript file {path}: {first}") from None
        return cls(detector.eval(), device)

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """``(N, 3, T, H, W)`` videos in [-1, 1] -> ``(N, D)`` float64 feature rows on the CPU."""
        if videos.dim() != 5 or videos.shape[1] != 3:
            raise ValueError(f"expected (N, 3, T, H, W) videos, got {tuple(videos.shape)}")
        rows = []
        for chunk in videos.split(batch_size):
            x = resize_video(chunk.to(self.device, torch.float32))
            features = self.detector(x, rescale=False, resize=False, return_features=True)
            rows.append(features.reshape(features.shape[0], -1).double().cpu())
        return torch.cat(rows)


def resize_video(videos: torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """``(N, 3, T, H, W)`` -> ``(N, 3, T, size, size)``: every frame squashed with bilinear, no antialiasing."""
    n, c, t, h, w = videos.shape
    if (h, w) == (size, size):
        return videos
    frames = videos.transpose(1, 2).reshape(n * t, c, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return frames.reshape(n, t, c, size, size).transpose(1, 2)
