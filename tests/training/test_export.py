"""Export: a full official-layout checkpoint, key for key the base, that loads with the trained weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import load_tiny_pipe, load_tiny_unet, tiny_batch, tiny_draws

from conftest import TINY_A


def one_training_step(pipe, preset: str = "rectify") -> None:
    from toonctl.training.objective import interpolation_loss
    from toonctl.training.trainable import apply_trainable, trainable_parameters

    apply_trainable(pipe, preset)
    optimizer = torch.optim.AdamW(trainable_parameters(pipe.unet, pipe.image_proj), lr=1e-3)
    batch = tiny_batch()
    interpolation_loss(pipe, batch, tiny_draws(batch)).loss.backward()
    optimizer.step()


@pytest.fixture(scope="module")
def trained_pipe():
    pipe = load_tiny_pipe()
    one_training_step(pipe)
    return pipe


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_export_loads_with_the_trained_weights(tmp_path, trained_pipe, suffix):
    from toonctl.pipelines.interpolate import InterpolationPipeline
    from toonctl.training.export import export_checkpoint, trained_replacements

    base_path = TINY_A / "model.safetensors"
    replacements = trained_replacements(trained_pipe, only_trainable=True)
    out = export_checkpoint(base_path, replacements, tmp_path / f"model{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left

    base = load_file(base_path)
    written = load_file(out) if suffix == ".safetensors" else torch.load(out, weights_only=True)["state_dict"]
    assert list(written) == list(base)  # key for key, in order
    assert all(written[k].dtype == base[k].dtype and written[k].shape == base[k].shape for k in base)
    changed = {k for k in base if not torch.equal(written[k], base[k])}
    assert changed and changed <= set(replacements)
    assert not any(k.startswith(("first_stage_model.", "cond_stage_model.", "embedder.")) for k in changed)

    loaded = InterpolationPipeline.from_checkpoint(out, TINY_A / "config.yaml")
    for name, param in trained_pipe.unet.named_parameters():
        assert torch.equal(loaded.unet.get_parameter(name), param), name
    for name, param in trained_pipe.image_proj.named_parameters():
        assert torch.equal(loaded.image_proj.get_parameter(name), param), name


def test_export_refuses_foreign_tensors_and_leaves_nothing(tmp_path):
    from toonctl.errors import ToonctlError
    from toonctl.training.export import export_checkpoint

    base_path = TINY_A / "model.safetensors"
    with pytest.raises(ToonctlError, match="missing from the base"):
        export_checkpoint(base_path, {"model.diffusion_model.nope": torch.zeros(1)}, tmp_path / "a.safetensors")
    with pytest.raises(ToonctlError, match="differ in shape"):
        export_checkpoint(base_path, {"image_proj_model.latents": torch.zeros(1)}, tmp_path / "b.safetensors")
    with pytest.raises(ToonctlError, match="unsupported suffix"):
        export_checkpoint(base_path, {}, tmp_path / "c.bin")
    assert list(tmp_path.iterdir()) == []


def test_lora_export_as_full_checkpoint_equals_merging_the_adapter(tmp_path):
    pytest.importorskip("peft")
    from toonctl.pipelines.interpolate import InterpolationPipeline
    from toonctl.training.export import export_checkpoint, trained_replacements
    from toonctl.training.lora import add_lora, merge_lora_file, save_lora_adapter
    from toonctl.training.objective import interpolation_loss
    from toonctl.training.trainable import LoraSpec

    spec = LoraSpec(rank=2, alpha=4.0)
    pipe = load_tiny_pipe()
    pipe.image_proj.requires_grad_(False)
    add_lora(pipe.unet, spec)
    optimizer = torch.optim.AdamW([p for p in pipe.unet.parameters() if p.requires_grad], lr=1e-2)
    batch = tiny_batch()
    interpolation_loss(pipe, batch, tiny_draws(batch)).loss.backward()
    optimizer.step()

    full = export_checkpoint(TINY_A / "model.safetensors", trained_replacements(pipe), tmp_path / "full.safetensors")
    adapter = save_lora_adapter(pipe.unet, tmp_path / "adapter.safetensors", spec)
    from_full = InterpolationPipeline.from_checkpoint(full, TINY_A / "config.yaml").unet.state_dict()
    merged_unet = load_tiny_unet()
    merge_lora_file(merged_unet, adapter)
    for key, value in merged_unet.state_dict().items():
        torch.testing.assert_close(from_full[key], value, rtol=0, atol=1e-6)
