"""The sketch-encoder objective on the tiny-a model: a fresh ControlNet copy is exactly "no control", the loss
falls over-fitting one clip while the UNet stays bit-identical, sketches come from the extractor (cached), and
the export is the released file layout."""

from __future__ import annotations

import pytest
import torch
from sketchdec_fixtures import T, load_tiny_pipe, tiny_batch

from conftest import FIXTURES
from toonctl.models.sketch_encoder import SketchEncoder, SketchEncoderConfig, load_sketch_encoder
from toonctl.training.objective import TrainingDraws, interpolation_loss
from toonctl.training.sketch_objective import (
    MaskedSketchControl,
    SketchEncoderObjective,
    controlnet_init,
    new_sketch_encoder,
    save_sketch_encoder,
)
from toonctl.training.sketch_sources import ExtractedSketches


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe():
    return load_tiny_pipe()


def _draws(seed: int = 0, batch: int = 1) -> TrainingDraws:
    return TrainingDraws.draw(
        batch_size=batch, num_frames=T, latent_hw=(4, 8), generator=torch.Generator().manual_seed(seed)
    )


def _hints(seed: int = 0) -> torch.Tensor:
    return (torch.rand((1, 1, T, 32, 64), generator=torch.Generator().manual_seed(seed)) > 0.8).float()


def test_controlnet_init_copies_the_unet_and_zeroes_the_outputs(pipe):
    encoder = SketchEncoder(SketchEncoderConfig.for_unet(pipe.unet.config))
    report = controlnet_init(encoder, pipe.unet)
    unet = pipe.unet
    assert report.sliced == ["input_blocks.0.0.weight"]
    assert torch.equal(encoder.input_blocks[0][0].weight, unet.input_blocks[0][0].weight[:, :4])
    assert torch.equal(encoder.time_embed[2].weight, unet.time_embed[2].weight)
    # the middle block's last ResBlock is index 2 here, index 3 (after a temporal transformer) in the UNet
    assert torch.equal(encoder.middle_block[2].out_layers[3].weight, unet.middle_block[3].out_layers[3].weight)
    assert all(k.startswith("input_hint_block.") for k in report.fresh)
    assert len(report.fresh) == 14  # the hint block's first 7 convs (weight + bias)
    assert all(not encoder.state_dict()[k].any() for k in report.zeroed)
    accounted = report.copied + report.sliced + report.zeroed + report.fresh
    assert sorted(accounted) == sorted(encoder.state_dict())


def test_fresh_encoder_changes_nothing_at_step_zero(pipe):
    torch.manual_seed(0)
    encoder = new_sketch_encoder(pipe.unet)
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, [2, 3, 5]] = True
    stage = MaskedSketchControl(encoder, _hints(), mask, text_tokens=pipe.config.unet.text_context_len)
    batch = tiny_batch()
    with torch.no_grad():
        plain = interpolation_loss(pipe, batch, _draws())
        controlled = interpolation_loss(pipe, batch, _draws(), control=stage)
        residuals = stage(plain.x_noisy, plain.z.new_tensor([500]).long(), plain.context)
    assert len(residuals) == pipe.unet.num_control_residuals
    assert all(r.shape[0] == T and not r.any() for r in residuals)
    assert torch.equal(controlled.model_output, plain.model_output)  # bit-exact
    assert torch.equal(controlled.loss, plain.loss)


def test_masked_control_only_touches_sketched_frames(pipe):
    torch.manual_seed(1)
    encoder = SketchEncoder(SketchEncoderConfig.for_unet(pipe.unet.config))  # random: non-zero residuals
    mask = torch.tensor([[False, True, False, False, True, False, False, False]])
    stage = MaskedSketchControl(encoder, _hints(), mask)
    x = torch.randn(1, 4, T, 4, 8)
    context = torch.randn(1, 77 + 256, pipe.unet.config.context_dim)
    with torch.no_grad():
        residuals = stage(x, torch.tensor([300]), context)
        # the same frames run on their own give the same residuals (the encoder is frame-independent)
        alone = encoder(x[:, :, [1, 4]], _hints()[:, :, [1, 4]], torch.tensor([300]), context[:, :77])
    for full, own in zip(residuals, alone, strict=True):
        assert full[[0, 2, 3, 5, 6, 7]].abs().max() == 0
        torch.testing.assert_close(full[[1, 4]], own, rtol=1e-4, atol=2e-5)
    nothing = MaskedSketchControl(encoder, _hints(), torch.zeros(1, T, dtype=torch.bool))
    assert nothing(x, torch.tensor([3]), context) is None


def test_loss_falls_over_fitting_one_clip_and_the_unet_is_untouched(pipe):
    torch.manual_seed(0)
    encoder = new_sketch_encoder(pipe.unet)
    objective = SketchEncoderObjective(pipe, encoder, uncond_prob=0.0)
    frozen = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    assert all(not p.requires_grad for p in pipe.unet.parameters())
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, 1:-1] = True
    batch = tiny_batch(hints=_hints(), hint_mask=mask)
    optimizer = torch.optim.Adam(objective.trainable_modules()["sketch_encoder"].parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        result = objective.step_loss(batch, draws=_draws(seed=2))  # the same noise: a fixed target to fit
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(torch.equal(v, frozen[k]) for k, v in pipe.unet.state_dict().items())
    assert all(p.grad is None for p in pipe.unet.parameters())


def test_mask_is_drawn_when_the_batch_has_none(pipe):
    encoder = new_sketch_encoder(pipe.unet)
    objective = SketchEncoderObjective(pipe, encoder)
    batch = tiny_batch(hints=_hints())
    with torch.no_grad():
        a = objective.step_loss(batch, torch.Generator().manual_seed(5))
        b = objective.step_loss(batch, torch.Generator().manual_seed(5))
    assert torch.equal(a.hint_mask, b.hint_mask) and a.hint_mask.any()
    assert not a.hint_mask[:, [0, -1]].any()  # key frames never get a sketch by default
    assert torch.equal(a.loss, b.loss)
    with pytest.raises(ValueError, match="no sketches"):
        objective.step_loss(tiny_batch(), torch.Generator().manual_seed(5))


def test_extracted_sketches_are_cached_per_clip(tmp_path):
    from toonctl.models.sketch_extractor import SketchExtractor, SketchExtractorConfig

    torch.manual_seed(0)
    extractor = SketchExtractor(SketchExtractorConfig(ngf=4, num_downs=5)).eval()
    source = ExtractedSketches(extractor, load_size=32, cache_dir=tmp_path)
    video = tiny_batch().video
    first = source(video)
    assert first.shape == (1, 1, T, 32, 64) and 0 <= first.min() and first.max() <= 1
    again = source(video)
    assert (source.misses, source.hits) == (1, 1) and torch.equal(first, again)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    other = SketchExtractor(SketchExtractorConfig(ngf=4, num_downs=5)).eval()  # other weights: not its cache
    ExtractedSketches(other, load_size=32, cache_dir=tmp_path)(video)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_export_is_the_released_layout(pipe, tmp_path):
    encoder = new_sketch_encoder(pipe.unet)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.01)

    class Wrapped(torch.nn.Module):  # as DDP / accelerate hand it back
        def __init__(self, module):
            super().__init__()
            self.module = module

    for name in ("sketch_encoder.ckpt", "sketch_encoder.safetensors"):
        path = save_sketch_encoder(Wrapped(encoder), tmp_path / name)
        loaded = load_sketch_encoder(path, SketchEncoderConfig.for_unet(pipe.unet.config))
        assert loaded.state_dict().keys() == encoder.state_dict().keys()
        assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert not list(tmp_path.glob(".*partial"))
    raw = torch.load(tmp_path / "sketch_encoder.ckpt", weights_only=True)
    assert list(raw) == list(encoder.state_dict())  # bare keys, the module's order


def test_full_size_export_keys_match_the_release():
    """The exported names and shapes at the released size, checked on the meta device (no weights)."""
    rows = [line.split("\t") for line in (FIXTURES / "sketch-encoder-keys.tsv").read_text().splitlines()[1:]]
    expected = {k: tuple(int(s) for s in shape.split("x")) for k, shape in rows}
    with torch.device("meta"):
        encoder = SketchEncoder()
    from toonctl.training.sketch_objective import unwrap

    exported = {k: tuple(v.shape) for k, v in unwrap(encoder).state_dict().items()}
    assert exported == expected
    assert sum(v.numel() for v in encoder.state_dict().values()) == 364_227_952


def test_exported_encoder_runs_in_sketch_interp(pipe, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from conftest import TINY_A, draw_key
    from toonctl.cli.app import app

    encoder = new_sketch_encoder(pipe.unet)
    with torch.no_grad():  # a trained encoder: non-zero outputs
        for p in encoder.parameters():
            p.add_(0.01)
    path = save_sketch_encoder(encoder, tmp_path / "sketch_encoder.ckpt")
    keys = [draw_key(tmp_path / f"key{i}.png", 20 + 120 * i) for i in range(2)]
    Image.new("L", (256, 128), 255).save(tmp_path / "sketch.png")
    model = ["--weights", TINY_A / "model.safetensors", "--config", TINY_A / "config.yaml", "--device", "cpu"]
    args = [*keys, "--sketch", f"2={tmp_path / 'sketch.png'}", "--sketch-encoder", path, "-n", "5", "--steps", "2"]
    args += ["--size", "32x64", "-o", f"{tmp_path / 'out'}/", "-q", *model]
    result = CliRunner().invoke(app, ["sketch-interp", *map(str, args)])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("frame_*.png"))) == 7


def test_folder_sketches_are_read_by_source_frame(tmp_path):
    from PIL import Image

    from toonctl.errors import DataError
    from toonctl.training.sketch_sources import read_folder_sketches, sketch_folder_for

    clip = tmp_path / "shot.mp4"
    folder = sketch_folder_for(clip)
    assert folder == tmp_path / "sketches" / "shot"
    folder.mkdir(parents=True)
    for i in (3, 5, 7):
        picture = Image.new("L", (128, 64), 255)  # black lines on white: inverted to white on black
        picture.paste(0, (2 * i, 0, 2 * i + 4, 64))
        picture.save(folder / f"{i:04d}.png")
    hints = read_folder_sketches(clip, [3, 5, 7], (32, 64))
    assert hints.shape == (1, 3, 32, 64)
    assert hints[0, 1, :, 5:7].min() > 0.8 and hints[0, 1, :, 20:].max() < 0.1
    with pytest.raises(DataError, match=r"no sketch for frames \[4\]"):
        read_folder_sketches(clip, [3, 4], (32, 64))
    with pytest.raises(DataError, match="no sketch folder"):
        read_folder_sketches(tmp_path / "other.mp4", [0], (32, 64))


def test_gradient_checkpointing_gives_the_same_gradients(pipe):
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, [2, 5]] = True
    batch = tiny_batch(hints=_hints(), hint_mask=mask)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        encoder = new_sketch_encoder(pipe.unet)
        objective = SketchEncoderObjective(pipe, encoder, uncond_prob=0.0)
        if checkpointing:
            objective.enable_gradient_checkpointing()
        objective.step_loss(batch, draws=_draws(seed=3)).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in encoder.parameters()]))
    pipe.unet.set_gradient_checkpointing(False)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-8)
