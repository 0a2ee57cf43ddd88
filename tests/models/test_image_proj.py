"""The Perceiver Resampler against the tiny-a goldens (official ``lvdm/modules/encoders/resampler.py``)."""

from __future__ import annotations

import pytest
import torch

from conftest import COMPONENT_TOL, FIXTURES, assert_rel_close, load_golden, rel_error, strip_prefix
from toonctl.models.configs import ResamplerConfig
from toonctl.models.image_proj import Resampler

IMAGE_PROJ_PREFIX = "image_proj_model."


@pytest.fixture(scope="module")
def resampler(tiny_config, tiny_state_dict):
    module = Resampler(tiny_config.image_proj).eval()
    module.load_state_dict(strip_prefix(tiny_state_dict, IMAGE_PROJ_PREFIX), strict=True)
    return module


@pytest.fixture(scope="module")
def image_golden():
    return load_golden("image_embed")


@torch.no_grad()
@pytest.mark.parametrize("prefix", ["", "fullres_"])
def test_resampler_matches_golden(resampler, image_golden, prefix):
    out = resampler(image_golden[f"{prefix}embedder_out"])
    assert_rel_close(out, image_golden[f"{prefix}resampler_out"], COMPONENT_TOL, f"{prefix}resampler_out")


@torch.no_grad()
def test_batch_rows_are_independent(resampler, image_golden):
    tokens = image_golden["embedder_out"]
    together = resampler(tokens)
    alone = torch.cat([resampler(tokens[i : i + 1]) for i in range(tokens.shape[0])])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_meta_build_matches_512_checkpoint_keys():
    rows = (FIXTURES / "tooncrafter-512-keys.tsv").read_text(encoding="utf-8").splitlines()[1:]
    expected = {}
    for row in rows:
        key, shape, _, _, _, used = row.split("\t")
        if key.startswith(IMAGE_PROJ_PREFIX):
            assert used == "yes", key
            expected[key[len(IMAGE_PROJ_PREFIX) :]] = tuple(int(d) for d in shape.split("x"))
    with torch.device("meta"):
        module = Resampler(ResamplerConfig())
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    assert module(torch.empty(2, 257, 1280, device="meta")).shape == (2, 256, 1024)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_stay_close(resampler, image_golden, tiny_config, dtype):
    low = Resampler(tiny_config.image_proj).eval()
    low.load_state_dict(resampler.state_dict())
    low.to(dtype)
    tokens = image_golden["embedder_out"]
    out = low(tokens)  # float32 input is cast to the weights' dtype
    assert out.dtype == dtype
    assert rel_error(out, resampler(tokens)) < 5e-2
