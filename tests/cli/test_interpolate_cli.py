"""``toonctl interpolate`` and ``toonctl batch`` end to end on the tiny official-layout model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_A, draw_key
from toonctl.cli.app import app
from toonctl.io.video import read_frames

REPO = Path(__file__).resolve().parents[2]
MODEL_ARGS = [
    "--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml"),
    "--device", "cpu", "--steps", "2", "--size", "32x64",
]  # fmt: skip
FEW_FRAMES = ["--num-frames", "4"]  # a quarter of the model's 16: for tests that do not count frames


@pytest.fixture
def keys(tmp_path) -> list[Path]:
    return [draw_key(tmp_path / f"key{i}.png", 20 + 80 * i, (50 * i, 80, 200)) for i in range(3)]


def invoke(*args: str):
    result = CliRunner().invoke(app, [*map(str, args)])
    return result


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".webm", ".webp", ".apng"])
def test_every_output_format_reads_back(tmp_path, keys, suffix):
    out = tmp_path / f"out{suffix}"
    result = invoke("interpolate", keys[0], keys[1], "-o", out, "--fps", "12", "-q", *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    frames, fps = read_frames(out)
    assert frames.shape[1:] == (32, 64, 3)
    # gif/webp/apng encoders merge identical consecutive frames; the model's frames all differ
    assert frames.shape[0] == 16
    assert fps == pytest.approx(12, rel=0.02)
    assert f"wrote {out}" in result.stdout


def test_png_folder_chain_inbetweens_and_exact_keys(tmp_path, keys):
    out = tmp_path / "frames"
    result = invoke("interpolate", *keys, "-o", f"{out}/", "-n", "7", "--json", *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["frames"] == 1 + 7 + 1 + 7 + 1 and info["segments"] == 2
    files = sorted(out.glob("frame_*.png"))
    assert len(files) == 17
    # Key positions carry the (fitted) input pixels exactly: frames 0, 8 and 16.
    from toonctl.io.frames import fit_image, read_image

    for key, index in zip(keys, (0, 8, 16), strict=True):
        expected = np.asarray(fit_image(read_image(key), (32, 64), "crop"))
        assert np.array_equal(np.asarray(Image.open(files[index])), expected), index


def test_loop_does_not_repeat_the_first_key(tmp_path, keys):
    out = tmp_path / "loop"
    result = invoke("interpolate", keys[0], keys[1], "--loop", "-n", "3", "-o", f"{out}/", "-q", *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("frame_*.png"))) == 2 * (1 + 3)


def test_seed_makes_runs_reproducible(tmp_path, keys):
    outs = []
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        out = tmp_path / name
        assert (
            invoke("interpolate", *keys[:2], "-o", f"{out}/", "--seed", seed, "-q", *MODEL_ARGS, *FEW_FRAMES).exit_code
            == 0
        )
        outs.append(np.stack([np.asarray(Image.open(f)) for f in sorted(out.glob("*.png"))]))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_num_frames_sets_the_segment_length(tmp_path, keys):
    out = tmp_path / "frames"
    result = invoke("interpolate", *keys, "-o", f"{out}/", "--num-frames", "6", "--json", *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == len(list(out.glob("frame_*.png"))) == 1 + 4 + 1 + 4 + 1
    for args, message in [
        (["--num-frames", "3"], "--num-frames"),
        (["--num-frames", "8", "-n", "7"], "num_frames - 2"),
    ]:
        result = invoke("interpolate", *keys[:2], "-o", tmp_path / "x.gif", *MODEL_ARGS, *args)
        assert result.exit_code == 2 and message in result.output, result.output


def test_skip_existing(tmp_path, keys):
    out = tmp_path / "done.gif"
    out.write_bytes(b"already here")
    result = invoke("interpolate", keys[0], keys[1], "-o", out, "--skip-existing", "--json", *MODEL_ARGS)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["skipped"] is True
    assert out.read_bytes() == b"already here"


def _error(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    return result.stderr


def test_input_errors(tmp_path, keys):
    out = tmp_path / "out.mp4"
    assert "missing.png" in _error(invoke("interpolate", tmp_path / "missing.png", keys[0], "-o", out, *MODEL_ARGS))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert "notes.png" in _error(invoke("interpolate", text, keys[0], "-o", out, *MODEL_ARGS))
    data = keys[0].read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated.png" in _error(invoke("interpolate", truncated, keys[1], "-o", out, *MODEL_ARGS))
    tiny = draw_key(tmp_path / "tiny.png", 2, size=(16, 16))
    assert "tiny.png" in _error(invoke("interpolate", tiny, keys[1], "-o", out, *MODEL_ARGS))
    assert not out.exists()


def test_output_errors(tmp_path, keys):
    assert ".avi" in _error(invoke("interpolate", *keys[:2], "-o", tmp_path / "out.avi", *MODEL_ARGS))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _error(invoke("interpolate", *keys[:2], "-o", blocker / "out.mp4", *MODEL_ARGS))
    assert "create it first" in _error(
        invoke("interpolate", *keys[:2], "-o", tmp_path / "no" / "out.mp4", *MODEL_ARGS)
    )


def test_size_errors_and_mixed_key_sizes(tmp_path, keys):
    result = invoke("interpolate", *keys[:2], "-o", tmp_path / "o.mp4", *MODEL_ARGS, "--size", "40x64")
    assert result.exit_code == 2 and "multiples of 32" in result.stderr  # a bad option value: usage error
    portrait = draw_key(tmp_path / "portrait.png", 10, size=(256, 128))
    result = invoke("interpolate", keys[0], portrait, "-o", tmp_path / "o.gif", *MODEL_ARGS)
    assert result.exit_code == 0, result.output
    assert "differ in size" in result.stderr


def test_out_of_range_flags_are_usage_errors(tmp_path, keys):
    for flag, value in [("--steps", "0"), ("--guidance-rescale", "1.5"), ("--eta", "-1"), ("--fit", "stretch"),
                        ("--inbetweens", "15"), ("--fps", "0")]:  # fmt: skip
        result = invoke("interpolate", *keys[:2], "-o", tmp_path / "o.mp4", *MODEL_ARGS, flag, value)
        assert result.exit_code == 2, (flag, result.output)
    one_key = invoke("interpolate", keys[0], "-o", tmp_path / "o.mp4", *MODEL_ARGS)
    assert one_key.exit_code == 2 and "two or more key frames, got 1" in one_key.output
    assert "internal error" not in one_key.output


def test_weights_errors(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    stderr = _error(invoke("interpolate", *keys[:2], "-o", tmp_path / "o.mp4", "--device", "cpu"))
    assert "toonctl weights fetch" in stderr
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"\x00" * 1000)
    args = ["--weights", bad, "--config", TINY_A / "config.yaml", "--device", "cpu"]
    assert "model.ckpt" in _error(invoke("interpolate", *keys[:2], "-o", tmp_path / "o.mp4", *args))
    import torch
    from safetensors.torch import save_file

    sd_file = tmp_path / "sd15.safetensors"
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(4),
    }
    save_file(sd, sd_file)
    args[1] = sd_file
    assert "ToonCrafter" in _error(invoke("interpolate", *keys[:2], "-o", tmp_path / "o.mp4", *args))


def test_ctrl_c_leaves_no_output(tmp_path, keys, monkeypatch):
    import toonctl.pipelines.interpolate as interp

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(interp, "sample_ddim", interrupted)
    out = tmp_path / "o.mp4"
    result = invoke("interpolate", *keys[:2], "-o", out, *MODEL_ARGS)
    assert result.exit_code == 130
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def _default_sigint() -> None:
    """In the child: Ctrl-C handled as in a terminal, even when the test runner was started ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "toonctl", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint,
                            **kwargs)  # fmt: skip


def test_subprocess_run_and_sigint(tmp_path, keys):
    out = tmp_path / "o.gif"
    proc = _cli("interpolate", *keys[:2], "-o", out, *MODEL_ARGS, *FEW_FRAMES)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stdout.startswith("✓ wrote") and out.exists()
    # Ctrl-C while sampling: exit 130 and no output file.
    slow = tmp_path / "slow.mp4"
    proc = _cli("interpolate", *keys[:2], "-o", slow, *MODEL_ARGS, "--steps", "1000")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "Loading" not in proc.stderr.readline():
        pass
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert not slow.exists() and not list(tmp_path.glob(".*partial*"))


# -- batch --------------------------------------------------------------------------------------------


def _shots(root: Path) -> Path:
    shots = root / "shots"
    a, b, bad = (shots / n for n in ("a_walk", "b_jump", "c_broken"))
    for folder in (a, b, bad):
        folder.mkdir(parents=True)
    draw_key(a / "1.png", 20), draw_key(a / "2.png", 150)
    (a / "prompt.txt").write_text("a ball rolls\n")
    for i in range(3):
        draw_key(b / f"key{i}.png", 20 + 60 * i)
    (b / "shot.yaml").write_text("inbetweens: 3\nframe_stride: 5\n")
    (bad / "1.png").write_text("not a png")
    draw_key(bad / "2.png", 40)
    return shots


def test_batch_resumes_and_reports_failures(tmp_path):
    shots, out = _shots(tmp_path), tmp_path / "out"
    result = invoke("batch", shots, "-o", out, "--format", "gif", "--json", *MODEL_ARGS, "--num-frames", "5")
    assert result.exit_code == 3, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    status = {row["shot"]: row["status"] for row in lines if "shot" in row}
    assert status == {"a_walk": "done", "b_jump": "done", "c_broken": "failed"}
    assert read_frames(out / "b_jump.gif")[0].shape[0] == 1 + 3 + 1 + 3 + 1
    assert lines[-1]["failed"] == 1 and lines[-1]["done"] == 2
    # A crash: b_jump's output never finished (a stale temporary) and a_walk is lost.
    (out / "b_jump.gif").rename(out / ".b_jump.partial-999.gif")
    mtime_a = (out / "a_walk.gif").stat().st_mtime_ns
    result = invoke("batch", shots, "-o", out, "--format", "gif", "--json", *MODEL_ARGS, "--num-frames", "5")
    status = {row["shot"]: row["status"] for row in map(json.loads, result.stdout.splitlines()) if "shot" in row}
    assert status == {"a_walk": "skipped", "b_jump": "done", "c_broken": "failed"}
    assert (out / "a_walk.gif").stat().st_mtime_ns == mtime_a
    assert not list(out.glob(".*partial*"))
    # Human output: a summary table on stderr, the result line on stdout.
    (shots / "c_broken").rename(tmp_path / "c_broken")
    result = invoke("batch", shots, "-o", out, "--format", "gif", *MODEL_ARGS)
    assert result.exit_code == 0
    assert "skipped" in result.stderr and "batch: 2 skipped" in result.stdout
    # Wrong SHOTS folders are the user's errors, not internal ones.
    assert "shots folder not found" in _error(invoke("batch", tmp_path / "nope", "-o", out, *MODEL_ARGS))
    (tmp_path / "empty").mkdir()
    assert "no shot folders" in _error(invoke("batch", tmp_path / "empty", "-o", out, *MODEL_ARGS))


def test_batch_shell_script(tmp_path):
    shots, out = _shots(tmp_path), tmp_path / "out"
    env = {**os.environ, "TOONCTL": f"{sys.executable} -m toonctl"}
    script = REPO / "examples" / "batch.sh"
    run = subprocess.run(
        ["bash", script, shots, out, *MODEL_ARGS, *FEW_FRAMES], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 1  # c_broken fails, the loop goes on
    assert "shot c_broken failed" in run.stderr
    assert {p.name for p in out.iterdir()} == {"a_walk.mp4", "b_jump.mp4"}
    assert read_frames(out / "a_walk.mp4")[0].shape[0] == 4
    before = (out / "a_walk.mp4").stat().st_mtime_ns
    subprocess.run(["bash", script, shots, out, *MODEL_ARGS, *FEW_FRAMES], env=env, capture_output=True, timeout=300)
    assert (out / "a_walk.mp4").stat().st_mtime_ns == before  # finished shots are skipped


def test_interrupt_inside_exec_still_exits_130(tmp_path, keys):
    """A Ctrl-C that lands inside ``exec()`` of a string (dataclasses, lazy imports: libraries do it) sets
    CPython's "unhandled KeyboardInterrupt" flag even though we handle it, and ``python -m`` then kills
    the process with SIGINT at shutdown. Batch scripts must still see exit 130."""
    (tmp_path / "interrupted_toonctl.py").write_text(
        "import toonctl.pipelines.interpolate as interp\n"
        "interp.sample_ddim = lambda *a, **k: exec('raise KeyboardInterrupt')\n"
        "from toonctl.cli.app import main\n"
        "main()\n"
    )
    out = tmp_path / "o.mp4"
    args = ["interpolate", *keys[:2], "-o", out, *MODEL_ARGS]
    proc = subprocess.run(
        [sys.executable, "-m", "interrupted_toonctl", *map(str, args)], capture_output=True, text=True,
        cwd=tmp_path, timeout=120, preexec_fn=_default_sigint,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().endswith("Interrupted.")
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
