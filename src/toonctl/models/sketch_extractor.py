"""The sketch extractor: Anime2Sketch's U-Net generator (coloured picture -> line art).

ToonCrafter's Hugging Face repository ships ``sketch_extractor.pth`` (218 MB) and credits Xiaoyu Xiang's
Anime2Sketch for it; the default Anime2Sketch generator has 54,405,505 parameters, 217.6 MB in fp32.
This reimplements ``model.py::UnetGenerator`` / ``UnetSkipConnectionBlock`` of Mukosame/Anime2Sketch as
``create_model("default")`` builds it: the pix2pix U-Net with ``input_nc=3, output_nc=1, num_downs=8,
ngf=64``, ``InstanceNorm2d(affine=False)`` (no parameters, no running statistics) and no dropout.

Structure (keys ``model.model.<i>...``, nested ``.model.<i>`` per level, as in the file):

* outermost: ``[Conv 4x4 s2 (input_nc -> ngf), <inner>, ReLU, ConvT 4x4 s2 (2 ngf -> output_nc), Tanh]``;
* middle levels: ``[LeakyReLU 0.2, Conv 4x4 s2, IN, <inner>, ReLU, ConvT 4x4 s2, IN]`` and the level's
  input concatenated with its output on channels;
* innermost: ``[LeakyReLU 0.2, Conv 4x4 s2, ReLU, ConvT 4x4 s2, IN]``, concatenated likewise.

The original's first LeakyReLU is in-place, so the ``x`` an inner level concatenates has already been
through it. That changes nothing: the parent applies ReLU to the concatenation, and
``relu(leaky_relu(x)) == relu(x)``, so the plain ``cat([x, model(x)])`` here gives the same numbers.

Input: RGB in [-1, 1] whose sides are multiples of ``2 ** num_downs`` (Anime2Sketch resizes to 512x512);
output: one channel in [-1, 1], black lines on white.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

MODULE_PREFIX = "module."  # nn.DataParallel; Anime2Sketch's loader strips it too


@dataclass(frozen=True)
class SketchExtractorConfig:
    """Anime2Sketch's ``UnetGenerator`` arguments (defaults: its ``default`` model)."""

    input_nc: int = 3
    output_nc: int = 1
    num_downs: int = 8
    ngf: int = 64

    def __post_init__(self) -> None:
        if self.num_downs < 5:
            raise ValueError(f"num_downs must be >= 5 (four levels widen ngf to 8 ngf), got {self.num_downs}")

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one halving per level)."""
        return 2**self.num_downs

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> SketchExtractorConfig:
        """Read the architecture off a state dict's shapes (our keys): every level has one conv and one
        transposed conv, so ``num_downs`` is half the number of 4-D weights."""
        first, last = shapes.get("model.model.0.weight"), shapes.get("model.model.3.weight")
        if first is None or last is None or len(first) != 4 or len(last) != 4:
            raise ValueError("not an Anime2Sketch UnetGenerator state dict (no model.model.0/3 weights)")
        convs = sum(1 for k, s in shapes.items() if k.endswith(".weight") and len(s) == 4)
        # Conv2d weights are (out, in, kh, kw); ConvTranspose2d weights are (in, out, kh, kw).
        return cls(input_nc=first[1], output_nc=last[1], num_downs=convs // 2, ngf=first[0])


class UnetSkipBlock(nn.Module):
    """One level of the U-Net: downsample, the inner levels, upsample (see the module docstring)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        *,
        outermost: bool = False,
        innermost: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = input_nc or outer_nc
        # InstanceNorm has no bias of its own, so the convs carry one (Anime2Sketch's use_bias rule).
        down = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1)
        if outermost:
            up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [down, submodule, nn.ReLU(), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, _norm(outer_nc)]
        else:
            up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [nn.LeakyReLU(0.2), down, _norm(inner_nc), submodule, nn.ReLU(), up, _norm(outer_nc)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C_out, H, W)``; inner levels return ``cat([x, f(x)])`` (the skip connection)."""
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class SketchExtractor(nn.Module):
    """Anime2Sketch's generator: ``(N, 3, H, W)`` in [-1, 1] -> ``(N, 1, H, W)`` line art in [-1, 1]."""

    def __init__(self, config: SketchExtractorConfig | None = None) -> None:
        super().__init__()
        config = config or SketchExtractorConfig()
        self.config = config
        ngf = config.ngf
        # Built from the innermost level outwards.
        block = UnetSkipBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(config.num_downs - 5):
            block = UnetSkipBlock(ngf * 8, ngf * 8, submodule=block)
        for mult in (4, 2, 1):
            block = UnetSkipBlock(ngf * mult, ngf * mult * 2, submodule=block)
        self.model = UnetSkipBlock(config.output_nc, ngf, config.input_nc, block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = self.config.size_multiple
        if x.ndim != 4 or x.shape[1] != self.config.input_nc or x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"input must be (N, {self.config.input_nc}, H, W) with H and W multiples of {multiple}, "
                f"got {tuple(x.shape)}"
            )
        return self.model(x)


def load_sketch_extractor(
    path: str | Path,
    config: SketchExtractorConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SketchExtractor:
    """Load ``sketch_extractor.pth`` (Anime2Sketch ``netG.pth``), strictly.

    Keys may carry a ``module.`` prefix (all of them). ``config`` None reads the architecture off the
    shapes (``SketchExtractorConfig.from_shapes``), then every key and shape is checked against it.

    Raises:
        CheckpointError: the file cannot be read.
        CheckpointMismatchError: not an Anime2Sketch generator (every mismatch listed).
    """
    from toonctl.checkpoint import load_module, read_state_dict

    state_dict = read_state_dict(path)
    module, keys = check_sketch_extractor(state_dict, config, path=path)
    return load_module(module, state_dict, keys, device=device, dtype=dtype).eval().requires_grad_(False)


def check_sketch_extractor(
    state_dict, config: SketchExtractorConfig | None = None, *, path: str | Path
) -> tuple[SketchExtractor, dict[str, str]]:
    """Check every key and shape of an extractor ``state_dict`` (read from ``path``) without reading data.

    Returns:
        the module built on the meta device, and ``{its key: key in the file}``.

    Raises:
        CheckpointMismatchError: not an Anime2Sketch generator (every mismatch listed).
    """
    from toonctl.checkpoint import build_checked, strip_shared_prefix
    from toonctl.errors import CheckpointMismatchError

    keys = strip_shared_prefix(state_dict, MODULE_PREFIX)
    hint = (
        "expected ToonCrafter's sketch_extractor.pth (toonctl weights fetch --sketch), i.e. Anime2Sketch's "
        "default netG.pth (the 'improved' variant has another architecture)"
    )
    if config is None:
        try:
            config = SketchExtractorConfig.from_shapes({k: tuple(state_dict[v].shape) for k, v in keys.items()})
        except ValueError as exc:
            raise CheckpointMismatchError(f"{path}: {exc}", hint=hint) from None
    module = build_checked(
        "sketch_extractor", lambda: SketchExtractor(config), state_dict, keys,
        message=f"{path} does not match the sketch extractor architecture ({config})", hint=hint,
    )  # fmt: skip
    return module, keys
