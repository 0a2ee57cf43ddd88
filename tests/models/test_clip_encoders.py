"""OpenCLIP text/vision towers and the CLIP preprocessing against the tiny-a goldens (official
``FrozenOpenCLIPEmbedder`` / ``FrozenOpenCLIPImageEmbedderV2``, float32 CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (
    COMPONENT_TOL,
    FIXTURES,
    PREPROCESS_TOL,
    TINY_A,
    assert_rel_close,
    load_golden,
    rel_error,
    strip_prefix,
)
from toonctl.models.clip_encoders import (
    OpenCLIPTextEncoder,
    OpenCLIPVisionEncoder,
    gaussian_kernel1d,
    preprocess_clip_image,
    resize_antialiased_bicubic,
)
from toonctl.models.configs import TextEncoderConfig, VisionEncoderConfig

TEXT_PREFIX = "cond_stage_model.model."
IMAGE_EMBEDDER_PREFIX = "embedder.model."
LOW_PRECISION_TOL = 5e-2


def text_weights(full: dict[str, torch.Tensor], config: TextEncoderConfig) -> dict[str, torch.Tensor]:
    """The text tower's keys minus those never used: the last block, ``text_projection``, ``logit_scale``."""
    unused = ("text_projection", "logit_scale")
    last_block = f"transformer.resblocks.{config.layers - 1}."
    sd = strip_prefix(full, TEXT_PREFIX)
    return {k: v for k, v in sd.items() if not k.startswith(last_block) and k not in unused}


def vision_weights(full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``visual.*`` minus ``visual.ln_post`` and ``visual.proj`` (the embedder's leftover text pieces go too)."""
    unused = ("visual.ln_post.", "visual.proj")
    sd = strip_prefix(full, IMAGE_EMBEDDER_PREFIX)
    return {k: v for k, v in sd.items() if k.startswith("visual.") and not k.startswith(unused)}


def read_png(path) -> torch.Tensor:
    """``(1, 3, H, W)`` in [-1, 1], as the golden harness maps pixels: ``(uint8 / 255 - 0.5) / 0.5``."""
    pixels = np.array(Image.open(path).convert("RGB"))
    return (torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5


def checkpoint_keys(prefix: str) -> dict[str, tuple[tuple[int, ...], bool]]:
    """``key -> (shape, used_at_inference)`` of the full-size checkpoint under ``prefix`` (stripped)."""
    rows = (FIXTURES / "tooncrafter-512-keys.tsv").read_text(encoding="utf-8").splitlines()[1:]
    keys = {}
    for row in rows:
        key, shape, _, _, _, used = row.split("\t")
        if key.startswith(prefix):
            dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
            keys[key[len(prefix) :]] = (dims, used == "yes")
    return keys


@pytest.fixture(scope="module")
def text_encoder(tiny_config, tiny_state_dict):
    encoder = OpenCLIPTextEncoder(tiny_config.text).eval()
    encoder.load_state_dict(text_weights(tiny_state_dict, tiny_config.text), strict=True)
    return encoder


@pytest.fixture(scope="module")
def vision_encoder(tiny_config, tiny_state_dict):
    encoder = OpenCLIPVisionEncoder(tiny_config.vision).eval()
    encoder.load_state_dict(vision_weights(tiny_state_dict), strict=True)
    return encoder


@pytest.fixture(scope="module")
def image_golden():
    return load_golden("image_embed")


@torch.no_grad()
def test_text_embedding_matches_golden(text_encoder):
    golden = load_golden("text")
    assert_rel_close(text_encoder(golden["tokens"]), golden["embedding"], COMPONENT_TOL, "text embedding")


def test_text_encoder_allocates_only_the_used_blocks(tiny_config, text_encoder):
    assert len(text_encoder.transformer.resblocks) == tiny_config.text.layers - 1


def test_golden_image_is_the_keyframe_png(image_golden):
    assert torch.equal(read_png(TINY_A / "inputs" / "keyframe_0.png"), image_golden["image"][:1])
    assert torch.equal(read_png(TINY_A / "inputs" / "keyframe_1.png"), image_golden["image"][1:2])


def test_preprocess_upscaling_matches_golden(image_golden):
    out = preprocess_clip_image(image_golden["image"][:1])
    assert_rel_close(out, image_golden["preprocess_out_k0"], PREPROCESS_TOL, "preprocess_out_k0")


def test_preprocess_downscaling_matches_golden(image_golden):
    out = preprocess_clip_image(read_png(TINY_A / "inputs" / "clip_fullres.png"))
    assert_rel_close(out, image_golden["fullres_preprocess_out"], PREPROCESS_TOL, "fullres_preprocess_out")


def test_antialias_kernels_are_kornias():
    # 320x512 -> 224: sigma (0.2143, 0.6429), 3 taps each (numbers from the spec, section 1.2).
    vertical = gaussian_kernel1d(3, (320 / 224 - 1) / 2, dtype=torch.float32, device=torch.device("cpu"))
    horizontal = gaussian_kernel1d(3, (512 / 224 - 1) / 2, dtype=torch.float32, device=torch.device("cpu"))
    torch.testing.assert_close(vertical, torch.tensor([1.87e-5, 0.99996, 1.87e-5]), atol=1e-6, rtol=1e-3)
    torch.testing.assert_close(horizontal, torch.tensor([0.1868, 0.6264, 0.1868]), atol=1e-4, rtol=0)
    same = torch.randn(1, 3, 224, 224)
    assert resize_antialiased_bicubic(same, (224, 224)) is same


@torch.no_grad()
def test_vision_tokens_match_golden(vision_encoder, image_golden):
    out = vision_encoder(preprocess_clip_image(image_golden["image"]))
    assert_rel_close(out, image_golden["embedder_out"], COMPONENT_TOL, "embedder_out")


@torch.no_grad()
def test_vision_tokens_full_resolution_match_golden(vision_encoder, image_golden):
    out = vision_encoder(preprocess_clip_image(read_png(TINY_A / "inputs" / "clip_fullres.png")))
    assert_rel_close(out, image_golden["fullres_embedder_out"], COMPONENT_TOL, "fullres_embedder_out")


def test_vision_encoder_rejects_unprocessed_pixels(vision_encoder):
    with pytest.raises(ValueError, match="224x224"):
        vision_encoder(torch.zeros(1, 3, 32, 64))


@pytest.mark.parametrize(
    ("build", "prefix"),
    [
        (lambda: OpenCLIPTextEncoder(TextEncoderConfig()), TEXT_PREFIX),
        (lambda: OpenCLIPVisionEncoder(VisionEncoderConfig()), IMAGE_EMBEDDER_PREFIX),
    ],
    ids=["text", "vision"],
)
def test_meta_build_matches_512_checkpoint_keys(build, prefix):
    with torch.device("meta"):
        module = build()
    expected = checkpoint_keys(prefix)
    used = {k: shape for k, (shape, is_used) in expected.items() if is_used}
    actual = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert actual == used
    # The keys left out are exactly the documented unused ones.
    unused = set(expected) - set(used)
    if prefix == TEXT_PREFIX:
        last_block = {k for k in expected if k.startswith("transformer.resblocks.23.")}
        assert unused == last_block | {"text_projection", "logit_scale"}
    else:
        assert unused == {k for k in expected if not k.startswith("visual.")} | {
            "visual.ln_post.weight",
            "visual.ln_post.bias",
            "visual.proj",
        }


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_stay_close(text_encoder, vision_encoder, image_golden, dtype, tiny_config):
    tokens = load_golden("text")["tokens"]
    text_low = OpenCLIPTextEncoder(tiny_config.text).eval()
    text_low.load_state_dict(text_encoder.state_dict())
    text_low.to(dtype)
    out = text_low(tokens)
    assert out.dtype == dtype
    assert rel_error(out, text_encoder(tokens)) < LOW_PRECISION_TOL

    pixels = preprocess_clip_image(image_golden["image"])
    vision_low = OpenCLIPVisionEncoder(tiny_config.vision).eval()
    vision_low.load_state_dict(vision_encoder.state_dict())
    vision_low.to(dtype)
    out = vision_low(pixels.to(dtype))
    assert out.dtype == dtype
    assert rel_error(out, vision_encoder(pixels)) < LOW_PRECISION_TOL
    assert preprocess_clip_image(image_golden["image"].to(dtype)).dtype == dtype
