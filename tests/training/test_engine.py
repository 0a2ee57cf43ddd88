"""The training engine with a toy objective: runs, checkpoints, resume equivalence, refusals, Ctrl-C."""

from __future__ import annotations

import json

import pytest
import torch
from engine_fixtures import ToyObjective, moving_square_clip
from safetensors.torch import load_file

from toonctl.errors import DataError
from toonctl.training.data import DataSettings
from toonctl.training.engine import Reporter, TrainSettings, accumulation_steps, load_trained_modules, train
from toonctl.training.logging import read_metrics_csv
from toonctl.training.run import RunError, RunFolder

DATA = DataSettings(size=(32, 64), num_frames=4, stride=(1, 3))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for i in range(3):
        moving_square_clip(folder / f"shot{i}.mp4", shift=7 * i, fps=12 + 6 * i)
    (folder / "shot0.txt").write_text("a blue square")
    return folder


def settings(run, **overrides) -> TrainSettings:
    values = dict(output_dir=run, max_steps=4, batch_size=1, effective_batch=2, checkpoint_every=2,
                  keep_checkpoints=2, log_every=1, num_workers=0, cpu=True)  # fmt: skip
    values.update(overrides)
    return TrainSettings(**values)


def run_toy(clips, run, resume=False, **overrides):
    return train(ToyObjective, [clips], DATA, settings(run, **overrides), objective_name="toy", resume=resume)


def weights(checkpoint):
    """The toy model's trained weights in a checkpoint (accelerate saved them as ``parts.model.*``)."""
    return {k.removeprefix("parts.model."): v for k, v in load_file(str(checkpoint / "model.safetensors")).items()}


def test_accumulation():
    assert (
        accumulation_steps(32, 2, 8) == 2 and accumulation_steps(32, 1, 1) == 32 and accumulation_steps(4, 8, 1) == 1
    )


def test_run_writes_config_checkpoints_and_metrics(clips, tmp_path):
    result = run_toy(clips, tmp_path / "run", max_steps=5)
    run = RunFolder(tmp_path / "run")
    assert result.step == 5 and result.checkpoint == run.checkpoint(5)
    assert [s for s, _ in run.checkpoints()] == [4, 5]  # every 2 steps + the end, the newest 2 kept
    assert not list(run.checkpoints_dir.glob(".*"))  # no temporary folder left
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["objective"] == "toy" and config["train"]["effective_batch"] == 2
    assert config["data"]["stride"] == [1, 3]
    rows = read_metrics_csv(tmp_path / "run" / "logs" / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[0]["lr"] == pytest.approx(0.05)
    assert {"grad_norm", "samples_per_s", "abs"} <= set(rows[0])


def test_resume_continues_exactly(clips, tmp_path):
    straight = run_toy(clips, tmp_path / "straight", max_steps=4)
    run_toy(clips, tmp_path / "split", max_steps=2)
    resumed = run_toy(clips, tmp_path / "split", resume=True, max_steps=4)
    assert resumed.step == 4
    a, b = weights(straight.checkpoint), weights(resumed.checkpoint)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = read_metrics_csv(tmp_path / "split" / "logs" / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    straight_rows = read_metrics_csv(tmp_path / "straight" / "logs" / "metrics.csv")
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in straight_rows], abs=1e-7)


def test_resume_with_other_settings_is_refused(clips, tmp_path):
    run_toy(clips, tmp_path / "run", max_steps=2)
    with pytest.raises(RunError, match=r"other settings:\n  train.learning_rate: None in the run, 0.1 now"):
        run_toy(clips, tmp_path / "run", resume=True, learning_rate=0.1)
    with pytest.raises(RunError, match="already holds a training run"):
        run_toy(clips, tmp_path / "run")
    with pytest.raises(RunError, match="nothing to resume"):
        run_toy(clips, tmp_path / "fresh", resume=True)
    run_toy(clips, tmp_path / "run", resume=True, max_steps=3, checkpoint_every=1)  # length may change


def test_no_usable_clip_fails_before_the_model_loads(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    built = []

    def make():
        built.append(1)
        return ToyObjective()

    with pytest.raises(DataError, match="none of the 1 clips"):
        train(make, [tmp_path], DATA, settings(tmp_path / "run"), objective_name="toy")
    assert built == []


def test_skipped_clips_are_warned_once_and_counted(clips, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    moving_square_clip(data / "good.mp4")
    moving_square_clip(data / "short.mp4", count=2)

    class Warnings(Reporter):
        def __init__(self):
            self.lines = []

        def warn(self, message):
            self.lines.append(message)

    reporter = Warnings()
    result = train(ToyObjective, [data], DATA, settings(tmp_path / "run", max_steps=3), objective_name="toy",
                   reporter=reporter)  # fmt: skip
    assert result.skipped_clips >= 1
    assert len([w for w in reporter.lines if "short.mp4" in w]) == 1


def test_export_loads_the_trained_weights(clips, tmp_path):
    result = run_toy(clips, tmp_path / "run", max_steps=2)
    fresh = ToyObjective()
    assert load_trained_modules(fresh, result.checkpoint) == ["model"]
    for key, value in weights(result.checkpoint).items():
        assert torch.equal(fresh.model.state_dict()[key], value)


def test_ema_is_saved_resumed_and_exported(clips, tmp_path):
    straight = run_toy(clips, tmp_path / "straight", max_steps=4, ema_decay=0.5)
    run_toy(clips, tmp_path / "split", max_steps=2, ema_decay=0.5)
    resumed = run_toy(clips, tmp_path / "split", resume=True, max_steps=4, ema_decay=0.5)
    a = load_file(str(straight.checkpoint / "ema.safetensors"))
    b = load_file(str(resumed.checkpoint / "ema.safetensors"))
    assert a.keys() == {f"model.{k}" for k in weights(straight.checkpoint)}
    for key in a:
        assert torch.equal(a[key], b[key]), key
    averaged, raw = ToyObjective(), ToyObjective()
    load_trained_modules(averaged, straight.checkpoint)
    load_trained_modules(raw, straight.checkpoint, use_ema=False)
    assert torch.equal(averaged.model.state_dict()["0.weight"], a["model.0.weight"])
    assert not torch.equal(raw.model.state_dict()["0.weight"], a["model.0.weight"])


def test_tensorboard_when_installed(clips, tmp_path):
    pytest.importorskip("tensorboard")
    run_toy(clips, tmp_path / "run", max_steps=2)
    assert list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "logs" / "metrics.csv").is_file()  # the CSV is always written


def test_resuming_a_finished_run_changes_nothing(clips, tmp_path):
    first = run_toy(clips, tmp_path / "run", max_steps=2)
    before = weights(first.checkpoint)
    again = run_toy(clips, tmp_path / "run", resume=True, max_steps=2)
    assert again.step == 2 and again.checkpoint == first.checkpoint
    assert all(torch.equal(before[k], v) for k, v in weights(again.checkpoint).items())


def test_sigterm_and_ctrl_c_ask_to_stop_after_the_step():
    import os
    import signal

    from toonctl.training.engine import StopFlag

    previous = signal.getsignal(signal.SIGTERM)
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is previous
