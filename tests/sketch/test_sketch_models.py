"""The sketch encoder (ControlNet) and the sketch extractor (Anime2Sketch): architecture against the released
files, strict loading of their layouts, and the properties the control stage relies on."""

from __future__ import annotations

import json

import pytest
import torch
from sketch_fixtures import TINY_EXTRACTOR, save_official, tiny_encoder, tiny_extractor, tiny_unet_config

from conftest import FIXTURES, TINY_A
from toonctl.errors import CheckpointMismatchError
from toonctl.models.configs import UNetConfig
from toonctl.models.sketch_encoder import SketchEncoder, SketchEncoderConfig, load_sketch_encoder
from toonctl.models.sketch_extractor import SketchExtractor, SketchExtractorConfig, load_sketch_extractor


def _inputs(b=2, t=3, h=4, w=8, context_len=77 + 16, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, t, h, w, generator=g)
    hint = torch.rand(b, 1, t, 8 * h, 8 * w, generator=g)
    context = torch.randn(b, context_len, dim, generator=g)
    return x, hint, torch.tensor([999, 501])[:b], context


# -- sketch encoder -----------------------------------------------------------------------------------


def test_full_size_encoder_matches_the_released_key_list():
    rows = (FIXTURES / "sketch-encoder-keys.tsv").read_text().splitlines()[1:]
    expected = {k: tuple(int(d) for d in s.split("x")) for k, s in (r.split("\t") for r in rows)}
    with torch.device("meta"):
        encoder = SketchEncoder()
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict(keep_vars=True).items()}
    assert shapes == expected
    assert len(shapes) == 340
    assert sum(p.numel() for p in encoder.parameters()) == 364_227_952
    # The released encoder is the one that fits the released UNet.
    assert SketchEncoderConfig.for_unet(UNetConfig()) == SketchEncoderConfig()
    assert SketchEncoderConfig().num_residuals == 13


def test_residuals_fit_the_unet_and_frames_are_independent():
    from toonctl.models.unet_toon3d import ToonUNet3D

    encoder = tiny_encoder()
    x, hint, t, context = _inputs()
    with torch.no_grad():
        residuals = encoder(x, hint, t, context)
        unet = ToonUNet3D(tiny_unet_config()).eval()
        assert len(residuals) == unet.num_control_residuals == encoder.config.num_residuals
        x_in = torch.cat([x, torch.zeros_like(x)], dim=1)
        plain = unet(x_in, t, context)
        steered = unet(x_in, t, context, control_residuals=residuals)
        assert steered.shape == plain.shape and not torch.allclose(steered, plain)
        # Frame-independent: frame 1 alone gives the same residuals as frame 1 among others.
        alone = encoder(x[:, :, 1:2], hint[:, :, 1:2], t, context)
    for full, single in zip(residuals, alone, strict=True):
        per_frame = full.view(2, 3, *full.shape[1:])[:, 1]
        torch.testing.assert_close(per_frame, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("layout", "prefix", "name"),
    [
        ("raw", "", "sketch_encoder.ckpt"),
        ("wrapped", "", "sketch_encoder.ckpt"),
        ("wrapped", "control_model.", "controlldm.ckpt"),
        ("fp16", "", "sketch_encoder-fp16.safetensors"),
    ],
)
def test_encoder_loads_the_official_layouts(tmp_path, layout, prefix, name):
    source = tiny_encoder(seed=1)
    path = save_official(source, tmp_path / name, layout=layout, prefix=prefix)
    loaded = load_sketch_encoder(path, source.config)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.dtype == torch.float32
    if layout == "fp16":  # the file holds the weights rounded to half precision; they load as float32
        with torch.no_grad():
            for param in source.parameters():
                param.copy_(param.half().float())
    x, hint, t, context = _inputs()
    with torch.no_grad():
        expected, got = source(x, hint, t, context), loaded(x, hint, t, context)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


def test_encoder_loading_is_strict_and_lists_every_problem(tmp_path):
    source = tiny_encoder()
    state = dict(source.state_dict())
    del state["middle_block_out.0.bias"]
    state["zero_convs.99.0.weight"] = torch.zeros(1)
    state["input_hint_block.0.weight"] = torch.zeros(16, 3, 3, 3)  # a 3-channel hint (the RGB ControlNets)
    torch.save(state, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_sketch_encoder(tmp_path / "bad.ckpt", source.config)
    err = info.value
    assert err.missing == ["middle_block_out.0.bias"]
    assert err.unexpected == ["zero_convs.99.0.weight"]
    assert len(err.mismatched) == 1 and "input_hint_block.0.weight" in err.mismatched[0]
    assert "sketch_encoder.ckpt" in err.hint
    # The released architecture does not take the tiny file either.
    with pytest.raises(CheckpointMismatchError, match="does not match the sketch encoder"):
        load_sketch_encoder(save_official(source, tmp_path / "tiny.ckpt"))


# -- sketch extractor ---------------------------------------------------------------------------------


def test_full_size_extractor_is_anime2sketch_default():
    with torch.device("meta"):
        extractor = SketchExtractor()
    shapes = {k: tuple(v.shape) for k, v in extractor.state_dict(keep_vars=True).items()}
    assert sum(p.numel() for p in extractor.parameters()) == 54_405_505
    assert shapes["model.model.0.weight"] == (64, 3, 4, 4)  # outermost down conv
    assert shapes["model.model.3.weight"] == (128, 1, 4, 4)  # outermost transposed conv -> 1 channel
    innermost = "model.model.1" + ".model.3" * 6
    assert shapes[f"{innermost}.model.1.weight"] == (512, 512, 4, 4)
    assert len(shapes) == 32  # 8 levels x (conv, transposed conv) x (weight, bias); the norms have none
    assert SketchExtractorConfig.from_shapes(shapes) == SketchExtractorConfig()


def test_extractor_loads_a_dataparallel_file_and_infers_its_size(tmp_path):
    source = tiny_extractor()
    path = save_official(source, tmp_path / "sketch_extractor.pth", prefix="module.")
    loaded = load_sketch_extractor(path)
    assert loaded.config == TINY_EXTRACTOR
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = loaded(x)
        assert torch.equal(out, source(x))
    assert out.shape == (2, 1, 64, 64) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="multiples of 32"):
        loaded(torch.zeros(1, 3, 48, 64))


def test_extractor_loading_is_strict(tmp_path):
    state = dict(tiny_extractor().state_dict())
    state["model.model.1.model.2.weight"] = torch.ones(8)  # an affine norm: not Anime2Sketch's default
    torch.save(state, tmp_path / "improved.bin")
    with pytest.raises(CheckpointMismatchError, match="does not match the sketch extractor") as info:
        load_sketch_extractor(tmp_path / "improved.bin")
    assert info.value.unexpected == ["model.model.1.model.2.weight"]
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="not an Anime2Sketch"):
        load_sketch_extractor(tmp_path / "other.pth")


def test_extract_line_art_keeps_the_picture_size():
    from toonctl.pipelines.sketch import extract_line_art

    frames = torch.rand(3, 3, 40, 72) * 2 - 1
    art = extract_line_art(tiny_extractor(), frames, load_size=64, batch_size=2)
    assert art.shape == (3, 1, 40, 72) and art.abs().max() <= 1
    with pytest.raises(ValueError, match="multiple of 32"):
        extract_line_art(tiny_extractor(), frames, load_size=48)


def test_weights_verify_recognises_the_sketch_files(tmp_path):
    from typer.testing import CliRunner

    from toonctl import weights
    from toonctl.cli.app import app

    encoder = save_official(tiny_encoder(), tmp_path / "sketch_encoder.ckpt", prefix="control_model.")
    extractor = save_official(tiny_extractor(), tmp_path / "sketch_extractor.pth", prefix="module.")
    config = TINY_A / "config.yaml"  # the encoder must fit this model's UNet
    report = weights.verify(encoder, config=config, full=True)
    assert (report.kind, report.components, report.ok, report.fully_loaded) == (
        "sketch_encoder", ["sketch_encoder"], True, True,
    )  # fmt: skip
    report = weights.verify(extractor)
    assert (report.kind, report.ok, report.fully_loaded) == ("sketch_extractor", True, False)
    # Against the released model's UNet (no config next to the file), the tiny encoder does not fit.
    report = weights.verify(encoder)
    assert report.kind == "sketch_encoder" and not report.ok
    assert "does not match the sketch encoder" in report.problems[0]
    result = CliRunner().invoke(app, ["weights", "verify", str(encoder), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["kind"] == "sketch_encoder"
    result = CliRunner().invoke(app, ["weights", "verify", str(encoder)])
    assert result.exit_code == 1 and "does not match the sketch encoder" in result.stderr
