"""``toonctl train`` end to end on the tiny model (CPU): over-fitting, resume, export, LoRA, bad data, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_fixtures import moving_square_clip
from safetensors.torch import load_file
from typer.testing import CliRunner

from toonctl.cli.app import app
from toonctl.training.logging import read_metrics_csv

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-a" / "model.safetensors"
FAST = ["--weights", str(TINY), "--size", "32x64", "--frames", "4", "--stride", "1:2", "--effective-batch", "1",
        "--num-workers", "0", "--cpu", "--log-every", "1", "--validation-every", "0", "--lr", "1e-3"]  # fmt: skip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    moving_square_clip(folder / "a.mp4", count=20)
    moving_square_clip(folder / "b.mp4", count=12, shift=9, fps=24)
    (folder / "a.txt").write_text("a blue square slides right")
    return folder


def invoke(*args):
    return CliRunner().invoke(app, ["train", *[str(a) for a in args]], env={"COLUMNS": "200"})


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


def test_loss_falls_overfitting_one_clip(tmp_path):
    from toonctl.training.data import ClipDataset, DataSettings, SampleKey, collate
    from toonctl.training.engine import TrainSettings, train
    from toonctl.training.unet_objective import UNetSettings, load_objective

    (tmp_path / "clip").mkdir()
    moving_square_clip(tmp_path / "clip" / "one.mp4", count=4)
    data = DataSettings(size=(32, 32), num_frames=4, stride=(1, 1))
    objective = load_objective(UNetSettings(weights=str(TINY), trainable="full", dropout=0.0))
    batch, _ = collate(
        [
            ClipDataset([r], data)[SampleKey(0, 0)]
            for r in __import__("toonctl.io.clips", fromlist=["discover_clips"]).discover_clips([tmp_path / "clip"])
        ]
    )

    def fixed_loss() -> float:  # the same four draws before and after training
        with torch.no_grad():
            return sum(objective.compute_loss(batch, torch.Generator().manual_seed(s)).loss.item() for s in range(4))

    before = fixed_loss()
    settings = TrainSettings(output_dir=tmp_path / "run", max_steps=12, effective_batch=1, learning_rate=3e-3,
                             num_workers=0, cpu=True, checkpoint_every=1000, log_every=1)  # fmt: skip
    train(lambda: objective, [tmp_path / "clip"], data, settings, objective_name="unet")
    objective.pipe.unet.eval()
    after = fixed_loss()
    assert after < 0.75 * before, (before, after)


def test_train_resume_export_and_load(clips, tmp_path):
    straight = invoke("unet", clips, "-o", tmp_path / "straight", "--max-steps", "4", *FAST)
    assert straight.exit_code == 0, straight.output
    assert "trainable parameters" in straight.output and "trained unet to step 4" in straight.output
    first = invoke("unet", clips, "-o", tmp_path / "split", "--max-steps", "2", "--checkpoint-every", "1", *FAST)
    assert first.exit_code == 0, first.output
    second = invoke("unet", clips, "-o", tmp_path / "split", "--max-steps", "4", "--resume", "--json", *FAST)
    assert second.exit_code == 0, second.output
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["step"] == 4
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000004" / "model.safetensors"))
    b = load_file(str(Path(result["checkpoint"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-identical on the CPU

    other = invoke("unet", clips, "-o", tmp_path / "split", "--resume", "--max-steps", "5", *FAST, "--lr", "1e-4")
    assert other.exit_code == 1 and len(error_lines(other)) == 1
    assert "train.learning_rate: 0.001 in the run, 0.0001 now" in other.output

    exported = invoke("export", tmp_path / "split", "-o", tmp_path / "toon.safetensors")
    assert exported.exit_code == 0, exported.output
    from toonctl.pipelines.interpolate import InterpolationPipeline

    pipe = InterpolationPipeline.from_checkpoint(tmp_path / "toon.safetensors", TINY.with_name("config.yaml"))
    base, out = load_file(str(TINY)), load_file(str(tmp_path / "toon.safetensors"))
    assert base.keys() == out.keys()
    trained = "model.diffusion_model.input_blocks.1.1.proj_in.weight"  # spatial: trains under rectify
    frozen = "model.diffusion_model.input_blocks.1.2.proj_in.weight"  # temporal transformer: frozen
    assert not torch.equal(base[trained], out[trained]) and torch.equal(base[frozen], out[frozen])
    torch.testing.assert_close(pipe.unet.state_dict()[trained[len("model.diffusion_model.") :]], out[trained])


def test_validation_grid_and_lora_export(clips, tmp_path):
    run = tmp_path / "lora"
    result = invoke("unet", clips, "-o", run, "--max-steps", "2", "--lora-rank", "4", *FAST[:-4],
                    "--validation-every", "2", "--validation-steps", "2", "--warmup-steps", "2",
                    "--gradient-checkpointing")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_metrics_csv(run / "logs" / "metrics.csv")
    assert [r["lr"] for r in rows] == pytest.approx([0.5e-4, 1e-4])  # LoRA's 1e-4, warmed up over 2 steps
    grids = sorted(p.name for p in (run / "validation").iterdir())
    assert grids == ["step-0000000.gif", "step-0000002.gif"]
    config = json.loads((run / "config.json").read_text())
    assert config["objective_settings"]["lora_rank"] == 4 and config["train"]["learning_rate"] is None
    exported = invoke("export", run, "-o", tmp_path / "style.safetensors", "--json")
    assert exported.exit_code == 0, exported.output
    adapter = load_file(str(tmp_path / "style.safetensors"))
    assert adapter and all(".lora_" in key for key in adapter)
    merged = invoke("export", run, "--merge", "-o", tmp_path / "merged.safetensors")
    assert merged.exit_code == 0, merged.output
    from toonctl.training.lora import merge_lora_file
    from toonctl.training.unet_objective import UNetSettings, load_objective

    plain = load_objective(UNetSettings(weights=str(TINY), trainable="projector")).pipe.unet
    merge_lora_file(plain, tmp_path / "style.safetensors", 1.0)
    full = load_file(str(tmp_path / "merged.safetensors"))
    for name, value in plain.state_dict().items():  # the merged export == the adapter merged at load
        torch.testing.assert_close(full["model.diffusion_model." + name], value, rtol=0, atol=1e-6)


def test_bad_data_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "x.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "short").mkdir()
    moving_square_clip(tmp_path / "short" / "s.mp4", count=3)
    for folder, message in (
        ("empty", "no clips found"),
        ("corrupt", "none of the 1 clips could be used"),
        ("short", "3 frames, fewer than the 4 needed"),
        ("missing", "does not exist"),
    ):
        result = invoke("unet", tmp_path / folder, "-o", tmp_path / f"run-{folder}", *FAST)
        assert result.exit_code == 1, (folder, result.output)
        assert len(error_lines(result)) == 1 and message in error_lines(result)[0], result.output
        assert "Traceback" not in result.output
        assert not (tmp_path / f"run-{folder}" / "checkpoints").exists()
    usage = invoke("unet", tmp_path / "short", "-o", tmp_path / "r", *FAST, "--stride", "3:1")
    assert usage.exit_code == 2


def test_missing_caption_trains_with_an_empty_prompt(tmp_path):
    (tmp_path / "data").mkdir()
    moving_square_clip(tmp_path / "data" / "no_caption.mp4", count=9)
    result = invoke("unet", tmp_path / "data", "-o", tmp_path / "run", "--max-steps", "1", *FAST)
    assert result.exit_code == 0, result.output


def test_ctrl_c_saves_a_checkpoint_and_exits_130(clips, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "toonctl", "train", "unet", str(clips), "-o", str(run), "--max-steps", "1000",
               "--checkpoint-every", "1000", *FAST]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    metrics = run / "logs" / "metrics.csv"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    assert len(checkpoints) == 1 and int(checkpoints[0].name[5:]) >= 1, err
    assert "continue with --resume" in err and "Traceback" not in err


def test_two_processes_equal_one_with_the_same_global_batch(clips, tmp_path):
    """gloo on the CPU (torchrun): 2 processes x batch 1 == 1 process x 2 accumulated, within float noise."""
    options = ["--max-steps", "2", *FAST, "--effective-batch", "2"]
    one = invoke("unet", clips, "-o", tmp_path / "one", *options)
    assert one.exit_code == 0, one.output
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    two = subprocess.run([*launch, "-m", "toonctl", "train", "unet", str(clips), "-o", str(tmp_path / "two"),
                          *options], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert two.returncode == 0, two.stderr
    state = json.loads((tmp_path / "two" / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())
    assert (state["num_processes"], state["accumulation"], state["global_batch"]) == (2, 1, 2)
    rows = [read_metrics_csv(tmp_path / run / "logs" / "metrics.csv") for run in ("one", "two")]
    for name in ("loss", "grad_norm"):  # the same clips and draws: the same numbers, step by step
        assert [r[name] for r in rows[0]] == pytest.approx([r[name] for r in rows[1]], rel=1e-5)
    # Adam divides by sqrt(v): for parameters with a near-zero gradient it turns float noise into a full
    # lr-sized step, so compare the whole update, not every element.
    base = load_file(str(TINY))
    a = load_file(str(tmp_path / "one" / "checkpoints" / "step-0000002" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert a.keys() == b.keys()
    official = {"parts.unet.": "model.diffusion_model.", "parts.image_proj.": "image_proj_model."}

    def base_key(key: str) -> str:
        prefix = next(p for p in official if key.startswith(p))
        return official[prefix] + key[len(prefix) :]

    update = torch.cat([(a[k] - base[base_key(k)]).flatten() for k in a])
    difference = torch.cat([(a[k] - b[k]).flatten() for k in a])
    assert difference.norm() < 1e-2 * update.norm()


def test_export_errors_are_one_line(tmp_path):
    (tmp_path / "notarun").mkdir()
    result = invoke("export", tmp_path / "notarun", "-o", tmp_path / "x.safetensors")
    assert result.exit_code == 1 and error_lines(result) == [
        f"Error: {tmp_path / 'notarun'} is not a training run (no config.json)"
    ]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text('{"objective": "unet", "objective_settings": {}}')
    result = invoke("export", tmp_path / "empty", "-o", tmp_path / "x.safetensors")
    assert result.exit_code == 1 and "has no checkpoint yet" in error_lines(result)[0]
    assert not (tmp_path / "x.safetensors").exists()
