"""CLIP scoring with the tiny-a towers against a direct computation written here with plain torch ops on the
state dict (open_clip's ``encode_text`` / ``encode_image`` maths, restated independently)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_A
from toonctl.models.clip_encoders import preprocess_clip_image
from toonctl.models.clip_scoring import CLIPScorer, center_square
from toonctl.models.tokenizer import CLIPTokenizer

TEXT = "cond_stage_model.model."
VISUAL = "embedder.model.visual."
CAPTIONS = ["a red ball bounces on green grass", "an anime girl waves"]


def _ln(x, sd, name):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], 1e-5)


def _block(x, sd, name, heads, mask):
    """One pre-norm block on ``(B, N, W)``: packed q/k/v attention with softmax, then the GELU MLP."""
    b, n, w = x.shape
    h = _ln(x, sd, name + ".ln_1")
    qkv = h @ sd[name + ".attn.in_proj_weight"].T + sd[name + ".attn.in_proj_bias"]
    q, k, v = (t.reshape(b, n, heads, w // heads).transpose(1, 2) for t in qkv.split(w, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(w // heads)
    if mask is not None:
        scores = scores + mask
    att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
    x = x + att @ sd[name + ".attn.out_proj.weight"].T + sd[name + ".attn.out_proj.bias"]
    h = _ln(x, sd, name + ".ln_2")
    h = torch.nn.functional.gelu(h @ sd[name + ".mlp.c_fc.weight"].T + sd[name + ".mlp.c_fc.bias"])
    return x + h @ sd[name + ".mlp.c_proj.weight"].T + sd[name + ".mlp.c_proj.bias"]


def direct_text(sd, tokens, layers, heads):
    x = sd[TEXT + "token_embedding.weight"][tokens] + sd[TEXT + "positional_embedding"][: tokens.shape[1]]
    n = tokens.shape[1]
    mask = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
    for i in range(layers):
        x = _block(x, sd, f"{TEXT}transformer.resblocks.{i}", heads, mask)
    x = _ln(x, sd, TEXT + "ln_final")
    eot = (tokens == 49407).int().argmax(-1)  # first end-of-text position
    out = x[torch.arange(x.shape[0]), eot] @ sd[TEXT + "text_projection"]
    return out / out.norm(dim=-1, keepdim=True)


def direct_image(sd, pixels, layers, heads, patch):
    x = torch.nn.functional.conv2d(pixels, sd[VISUAL + "conv1.weight"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    cls = sd[VISUAL + "class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + sd[VISUAL + "positional_embedding"]
    x = _ln(x, sd, VISUAL + "ln_pre")
    for i in range(layers):
        x = _block(x, sd, f"{VISUAL}transformer.resblocks.{i}", heads, None)
    out = _ln(x[:, 0], sd, VISUAL + "ln_post") @ sd[VISUAL + "proj"]
    return out / out.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def scorer(tiny_config):
    return CLIPScorer.from_checkpoint(TINY_A / "model.safetensors", tiny_config)


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(3)
    return torch.rand(3, 3, 32, 64, generator=g) * 2 - 1


def test_text_embeddings_match_direct_computation(scorer, tiny_config, tiny_state_dict):
    tokens = CLIPTokenizer()(CAPTIONS)
    ref = direct_text(tiny_state_dict, tokens, tiny_config.text.layers, tiny_config.text.heads)
    got = scorer.embed_texts(CAPTIONS)
    assert got.shape == (2, 16)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))


def test_image_embeddings_match_direct_computation(scorer, tiny_config, tiny_state_dict, frames):
    v = tiny_config.vision
    ref = direct_image(tiny_state_dict, preprocess_clip_image(frames), v.layers, v.heads, v.patch_size)
    torch.testing.assert_close(scorer.embed_images(frames, batch_size=2), ref, atol=1e-5, rtol=1e-5)
    ref_crop = direct_image(tiny_state_dict, preprocess_clip_image(frames[..., :, 16:48]), v.layers, v.heads, 14)
    torch.testing.assert_close(scorer.embed_images(frames, crop="center"), ref_crop, atol=1e-5, rtol=1e-5)


def test_similarities_are_cosines_of_the_direct_embeddings(scorer, tiny_config, tiny_state_dict, frames):
    v, t = tiny_config.vision, tiny_config.text
    img = direct_image(tiny_state_dict, preprocess_clip_image(frames), v.layers, v.heads, v.patch_size)
    txt = direct_text(tiny_state_dict, CLIPTokenizer()(CAPTIONS[:1]), t.layers, t.heads)
    torch.testing.assert_close(scorer.image_text_similarity(frames, CAPTIONS[0]), img @ txt[0], atol=1e-5, rtol=0)
    flipped = frames.flip(0)
    torch.testing.assert_close(
        scorer.image_image_similarity(frames, flipped), (img * img.flip(0)).sum(-1), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(scorer.image_image_similarity(frames, frames), torch.ones(3), atol=1e-5, rtol=0)


def test_scorer_uses_the_full_text_tower_and_both_heads(scorer, tiny_config):
    assert len(scorer.text.transformer.resblocks) == tiny_config.text.layers  # inference stops one block short
    assert scorer.vision.proj.shape == (32, 16) and scorer.text.text_projection.shape == (16, 16)


def test_missing_projection_is_a_checkpoint_error(tiny_config, tiny_state_dict):
    from toonctl.errors import CheckpointMismatchError

    pruned = {k: v for k, v in tiny_state_dict.items() if k != VISUAL + "proj"}
    with pytest.raises(CheckpointMismatchError, match="projection head"):
        CLIPScorer.from_state_dict(pruned, tiny_config)


def test_center_square_takes_the_middle():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6)
    assert torch.equal(center_square(x), x[..., :, 1:5])
