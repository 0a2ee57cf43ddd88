"""Bad and unusual input through the real CLI (issue 9): every case ends with the right exit code, one
``Error:`` line that is not an "internal error", no traceback and no partial output file.

Cases run in-process (``CliRunner``); only the signal cases start a subprocess. Most fail before the model
loads; the few that run it use the tiny model at 32x64 with one step and four frames where possible.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import TINY_A, draw_key
from toonctl.cli.app import app

TINY = ["--weights", str(TINY_A / "model.safetensors"), "--config", str(TINY_A / "config.yaml"), "--device", "cpu"]
RUN = [*TINY, "--steps", "1", "--size", "32x64"]  # a model run as cheap as it gets


@pytest.fixture
def fake_frames(monkeypatch):
    """Skip the sampling where a case is about what happens around it: the chain returns 16 grey frames."""
    import toonctl.pipelines.chain as chain

    monkeypatch.setattr(chain, "interpolate_chain", lambda pipe, keys, *a, **k: torch.zeros(16, 3, *keys[0].shape[1:]))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def no_partials(*folders: Path) -> bool:
    return not [p for folder in folders for p in folder.rglob("*") if ".partial-" in p.name or ".tmp-" in p.name]


def user_error(result, code: int = 1) -> str:
    """Assert a clean failure: ``code``, no traceback, no "internal error", exactly one ``Error:`` line
    (exit 2 from Typer's own parser prints its usage box instead). Returns stderr."""
    output = result.stderr + result.stdout
    assert result.exit_code == code, (result.exit_code, output)
    assert "Traceback" not in output and "internal error" not in output, output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    if code == 1 or errors:
        assert len(errors) == 1, result.stderr
    else:
        assert "Invalid value" in result.stderr or "Error" in result.stderr, result.stderr
    return result.stderr


@pytest.fixture
def keys(tmp_path) -> list[Path]:
    return [draw_key(tmp_path / f"key{i}.png", 20 + 80 * i, (50 * i, 80, 200)) for i in range(2)]


# -- inputs (handled well before this issue; kept as a regression battery) ------------------------------


def _png_claiming(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (64, 64)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "mislabelled", "huge-header", "tiny", "folder"])
def test_bad_key_frames(tmp_path, keys, kind):
    bad = tmp_path / f"bad-{kind}.png"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(keys[0].read_bytes()[:200])
    elif kind == "mislabelled":
        bad.write_text("a text file called .png")
    elif kind == "huge-header":
        _png_claiming(bad, 40000, 40000)
    elif kind == "tiny":
        Image.new("RGB", (16, 16)).save(bad)
    elif kind == "folder":
        bad.mkdir()
    out = tmp_path / "o.mp4"
    stderr = user_error(invoke("interpolate", keys[0], bad, "-o", out, *RUN))
    assert bad.name in stderr and "Loading" not in stderr  # refused before the model loads
    assert not out.exists() and no_partials(tmp_path)


# -- option values: usage errors (exit 2) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "option, needle",
    [
        (["--seed", "99999999999999999999999"], "18446744073709551615"),
        (["--size", "100x200"], "multiples of 32"),
        (["--size", "big"], "HEIGHTxWIDTH"),
        (["--size", "64000x64000"], "too large"),
        (["--device-map", "unet=cuda:1"], "CUDA is not available"),
        (["--device", "cuda"], "CUDA is not available"),
        (["-o", "result"], "no file type"),
        (["-o", "-"], "standard output"),
    ],
    ids=["seed", "size-multiple", "size-text", "size-huge", "device-map-cuda", "device-cuda", "o-no-suffix", "o-dash"],
)
def test_bad_option_values_are_usage_errors(tmp_path, keys, monkeypatch, option, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["interpolate", *keys, *RUN, *option]
    if "-o" not in option:
        args += ["-o", tmp_path / "o.mp4"]
    result = invoke(*args)
    stderr = user_error(result, code=2)
    assert needle in " ".join(stderr.replace("│", " ").split()), stderr
    assert not (tmp_path / "result").exists() and not (tmp_path / "-").exists()


# -- outputs -----------------------------------------------------------------------------------------------


def test_key_frames_of_different_sizes_are_fitted_with_a_warning(tmp_path, keys, fake_frames):
    portrait = draw_key(tmp_path / "portrait.png", 10, size=(256, 128))
    result = invoke("interpolate", keys[0], portrait, "-o", tmp_path / "o.gif", *RUN)
    assert result.exit_code == 0 and "differ in size" in result.stderr and "Error" not in result.stderr


def test_unwritable_output_is_refused_before_loading_and_names_the_users_path(keys):
    stderr = user_error(invoke("interpolate", *keys, "-o", "/proc/o.mp4", *RUN))
    assert "/proc/o.mp4" in stderr and "partial" not in stderr and "Loading" not in stderr
    stderr = user_error(invoke("sketch", keys[0], "-o", "/proc/l.png"))
    assert "/proc/l.png" in stderr and "partial" not in stderr


def test_empty_output_folder_is_not_a_finished_output(tmp_path, keys, monkeypatch):
    (tmp_path / "frames").mkdir()
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(tmp_path / "no-weights"))
    result = invoke("interpolate", *keys, "-o", f"{tmp_path / 'frames'}/", "--skip-existing", "--device", "cpu")
    assert "skipped" not in result.stdout and "no model weights" in user_error(result)  # it went on to work


def test_line_art_picture_gets_the_umask_permissions(tmp_path):
    import numpy as np

    from toonctl.io.sketches import write_line_art

    previous = os.umask(0o022)
    try:
        path = write_line_art(np.zeros((1, 64, 64), np.uint8), tmp_path / "l.png")
    finally:
        os.umask(previous)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644) and no_partials(tmp_path)


def test_video_decode_error_is_one_line_without_the_ffmpeg_banner(tmp_path, keys, monkeypatch):
    import numpy as np

    from toonctl.io.video import write_frames

    video = write_frames(np.zeros((8, 64, 64, 3), np.uint8), tmp_path / "v.mp4", fps=8)
    truncated = tmp_path / "t.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    for args in (["sketch", truncated, "-o", f"{tmp_path / 'lines'}/"], ["decode-bench", truncated, *TINY]):
        stderr = user_error(invoke(*args))
        assert "ffmpeg version" not in stderr and "configuration:" not in stderr
        assert len(stderr.strip().splitlines()) <= 2  # Error + Hint at most
    monkeypatch.setenv("TOONCTL_DEBUG", "1")
    assert "ffmpeg version" in invoke("sketch", truncated, "-o", f"{tmp_path / 'lines'}/").stderr  # the detail


# -- full disk ---------------------------------------------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_the_video_is_a_user_error(tmp_path, keys, monkeypatch, fake_frames):
    """Simulated: Pillow's save raises ENOSPC (the tmpfs test below does it for real when it can mount)."""
    monkeypatch.setattr(Image.Image, "save", _enospc)
    out = tmp_path / "o.gif"
    stderr = user_error(invoke("interpolate", *keys, "-o", out, *RUN))
    assert "no space left" in stderr and "Hint:" in stderr
    assert not out.exists() and no_partials(tmp_path)


def test_disk_full_report_and_conversion(tmp_path, monkeypatch):
    from toonctl.errors import DiskFullError
    from toonctl.io import atomic

    monkeypatch.setattr(Path, "write_text", _enospc)
    with pytest.raises(DiskFullError, match="no space left"):
        atomic.write_text_atomic(tmp_path / "b.json", "{}")
    monkeypatch.undo()
    assert not list(tmp_path.iterdir())  # no 0-byte report
    import toonctl.convert.components as components

    monkeypatch.setattr(components, "_save", _enospc)
    dest = tmp_path / "w"
    stderr = user_error(invoke("weights", "convert", TINY_A / "model.safetensors", "--config", TINY_A / "config.yaml",
                               "--dest", dest, "--name", "tiny"))  # fmt: skip
    assert "no space left" in stderr and not (dest / "tiny").exists() and no_partials(tmp_path)


def _mount_tmpfs(mount: Path, options: str) -> None:
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")


def test_read_only_tmpfs(tmp_path, keys):
    """A read-only file system (root may write anywhere else): refused before loading, naming the user's path."""
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "size=64k,ro")
    try:
        stderr = user_error(invoke("interpolate", *keys, "-o", mount / "o.gif", *RUN))
        assert "read-only file system" in stderr and str(mount / "o.gif") in stderr and "Loading" not in stderr
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 4 kB tmpfs, filled: needs mount rights (root in a container), else the test is skipped."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        try:  # fill it (creating the file may already fail: a 4 kB tmpfs has room for almost nothing)
            with open(mount / "filler", "wb") as f:
                f.write(b"\0" * 8192)
        except OSError:
            pass
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_full_tmpfs(tmp_path, keys, full_tmpfs, fake_frames):
    out = full_tmpfs / "o.gif"
    stderr = user_error(invoke("interpolate", *keys, "-o", out, *RUN))
    assert "no space left" in stderr and not out.exists() and no_partials(full_tmpfs)
    stderr = user_error(invoke("weights", "convert", TINY_A / "model.safetensors", "--config", TINY_A / "config.yaml",
                               "--dest", full_tmpfs, "--name", "tiny"))  # fmt: skip
    assert "no space left" in stderr and no_partials(full_tmpfs)


# -- numbers and memory ------------------------------------------------------------------------------------


def test_nan_stops_the_run_naming_the_stage(tmp_path, keys, monkeypatch):
    import toonctl.samplers.ddim as ddim

    monkeypatch.setattr(ddim, "direction_coef", lambda a_prev, sigma: torch.tensor(float("nan")))
    out = tmp_path / "o.gif"
    stderr = user_error(invoke("interpolate", *keys, "-o", out, *RUN))
    assert "sampling step 1 of 1" in stderr and not out.exists() and no_partials(tmp_path)


def test_memory_estimate_refuses_before_loading(tmp_path, keys, monkeypatch):
    import toonctl.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 1 << 20)
    stderr = user_error(invoke("interpolate", *keys, "-o", tmp_path / "o.gif", *RUN))
    assert "needs at least" in stderr and "--offload" in stderr and "Loading" not in stderr


def test_allocation_failure_is_out_of_memory(tmp_path, keys, monkeypatch):
    import toonctl.pipelines.interpolate as interp

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(interp, "sample_ddim", no_memory)
    stderr = user_error(invoke("interpolate", *keys, "-o", tmp_path / "o.gif", *RUN))
    assert "Error: out of memory" in stderr and "--decoder chunked" in stderr and no_partials(tmp_path)


def test_full_size_estimate_is_a_sane_lower_bound():
    from toonctl.memory import estimate_memory

    ckpt = TINY_A / "model.safetensors"
    cpu = estimate_memory(ckpt, 128, (320, 512), 16, device_type="cpu", dtype_bytes=4)
    assert 4 << 30 < cpu.decode < 8 << 30  # 4 x 16 frames x 128 ch x 320 x 512 x fp32 = 5.0 GiB
    gpu = estimate_memory(ckpt, 128, (320, 512), 16, device_type="cuda", dtype_bytes=2, decode_frames=4)
    assert gpu.decode == cpu.decode // 8 and gpu.weights == ckpt.stat().st_size // 2


# -- checkpoints -------------------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def _bad_checkpoint(kind: str, folder: Path) -> Path:
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}
    path = folder / f"{kind}.ckpt"
    if kind == "zeros":
        path.write_bytes(b"\0" * 1000)
    elif kind == "truncated":
        path = folder / "truncated.safetensors"
        path.write_bytes((TINY_A / "model.safetensors").read_bytes()[:5000])
    elif kind == "wrong-shape":
        full = load_file(TINY_A / "model.safetensors")
        key = next(k for k in full if k.endswith("input_blocks.0.0.weight"))
        full[key] = torch.zeros(3, 3)
        path = folder / "wrong.safetensors"
        save_file(full, path)
    elif kind == "code":
        torch.save({"state_dict": {**sd, "x": _Evil()}}, path)
    elif kind == "object":
        torch.save({"state_dict": sd, "hparams": argparse.Namespace(lr=1)}, path)
    elif kind == "plain-pickle":
        with open(path, "wb") as f:
            pickle.dump({"state_dict": {"a": [1, 2]}}, f, protocol=4)
    elif kind == "png":
        path = folder / "key.png"
        Image.new("RGB", (64, 64)).save(path)
    return path


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("zeros", "corrupt"),
        ("truncated", "not a valid safetensors file"),
        ("wrong-shape", "wrong shape"),
        ("code", "pickled Python object (print)"),
        ("object", "pickled Python object (argparse.Namespace)"),
        ("plain-pickle", "not a tensors-only PyTorch checkpoint"),
        ("png", "it is a PNG image"),
    ],
)
def test_bad_checkpoints(tmp_path, keys, capfd, kind, needle):
    bad = _bad_checkpoint(kind, tmp_path)
    config = ["--config", TINY_A / "config.yaml"]
    results = [invoke("interpolate", *keys, "-o", tmp_path / "o.gif", "--weights", bad, *config, "--size", "32x64")]
    if kind in ("code", "object", "plain-pickle"):  # the same words from every command that reads it
        results += [invoke("weights", "verify", "--full", bad, *config), invoke("weights", "convert", bad, *config,
                                                                            "--dest", tmp_path / "w")]  # fmt: skip
    for result in results:
        stderr = user_error(result)
        assert needle in stderr and "weights_only" not in stderr and "arbitrary code" not in stderr
        assert "re-download" not in stderr or kind in ("zeros", "truncated")
    captured = capfd.readouterr()
    assert "pickled code ran" not in captured.out and "Detected pickle protocol" not in captured.err
    assert not (tmp_path / "o.gif").exists() and not (tmp_path / "w").exists()


def test_config_problems_get_messages_about_what_is_wrong(tmp_path, keys):
    text = (TINY_A / "config.yaml").read_text()
    bad_config = tmp_path / "config.yaml"
    bad_config.write_text(text.replace("model_channels: 32", "model_channels: '32'", 1))
    stderr = user_error(invoke("interpolate", *keys, "-o", tmp_path / "o.gif", *RUN[:2], "--config", bad_config))
    assert "model_channels must be an integer" in stderr
    # a tiny model without its config: named as such, not as a size that is not a multiple of 64
    (tmp_path / "alone").mkdir()
    alone = tmp_path / "alone" / "tiny.safetensors"
    alone.write_bytes((TINY_A / "model.safetensors").read_bytes())
    stderr = user_error(invoke("interpolate", *keys, "-o", tmp_path / "o.gif", "--weights", alone))
    assert "--config" in stderr and "multiples of 64" not in stderr
    # a converted folder whose config.json is corrupt
    (tmp_path / "conv").mkdir()
    (tmp_path / "conv" / "config.json").write_text("{not json")
    stderr = user_error(invoke("interpolate", *keys, "-o", tmp_path / "o.gif", "--weights", tmp_path / "conv"))
    assert "config.json is not valid JSON" in stderr


def test_weights_destination_and_name_checks(tmp_path):
    src = [TINY_A / "model.safetensors", "--config", TINY_A / "config.yaml"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file, not a folder" in user_error(invoke("weights", "convert", *src, "--dest", a_file))
    dest = tmp_path / "w"
    for name in ("../../x", "/tmp/abs", "..", ".hidden"):
        assert "invalid model name" in user_error(
            invoke("weights", "convert", *src, "--dest", dest, "--name", name), 2
        )
    assert not (tmp_path / "x").exists() and not dest.exists()


# -- batch --------------------------------------------------------------------------------------------------


def test_batch_settings_output_inside_shots_and_summary(tmp_path):
    shots = tmp_path / "shots"
    for name in ("a", "b"):
        (shots / name).mkdir(parents=True)
        draw_key(shots / name / "1.png", 20), draw_key(shots / name / "2.png", 150)
    (shots / "a" / "shot.yaml").write_text("inbetweens: seven\n")
    (shots / "b" / "shot.yaml").write_text("steps: 0\n")
    (shots / "out").mkdir()  # an earlier run's output folder, inside SHOTS
    result = invoke("batch", shots, "-o", shots / "out", "--json", *RUN)
    assert result.exit_code == 3, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    errors = {row["shot"]: row.get("error") for row in rows if "shot" in row}
    assert set(errors) == {"a", "b"}  # "out" is not a shot
    assert "inbetweens must be an integer, got 'seven'" in errors["a"] and "steps must be >= 1" in errors["b"]
    human = invoke("batch", shots, "-o", shots / "out", *RUN)
    assert human.stdout.startswith("✗ batch: 2 failed"), human.stdout
    # SHOTS is validated before -o is created
    user_error(invoke("batch", tmp_path / "nope", "-o", tmp_path / "new-out", *RUN))
    assert not (tmp_path / "new-out").exists()


def test_sigterm_mid_batch_then_a_killed_run_then_resume(tmp_path, monkeypatch, fake_frames):
    """A real SIGTERM, delivered to this process while a shot renders, takes the Ctrl-C path (exit 130,
    temporaries removed); then the leftover of a SIGKILLed writer (which nothing can clean up at the time) is
    removed by the next run, which finishes every shot. In-process: a subprocess costs seconds of start-up."""
    import toonctl.pipelines.chain as chain
    from toonctl.cli.app import _terminate_like_ctrl_c

    shots, out = tmp_path / "shots", tmp_path / "out"
    for name in ("a", "b"):
        (shots / name).mkdir(parents=True)
        draw_key(shots / name / "1.png", 20), draw_key(shots / name / "2.png", 150)

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM was not handled")

    previous = signal.getsignal(signal.SIGTERM)
    try:
        _terminate_like_ctrl_c()
        with monkeypatch.context() as m:
            m.setattr(chain, "interpolate_chain", terminated)
            result = invoke("batch", shots, "-o", out, "-f", "gif", *RUN)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "interrupted" in result.stderr
    assert not list(out.iterdir())
    (out / ".b.partial-99999.gif").write_bytes(b"GIF89a half")  # what a SIGKILLed writer leaves
    result = invoke("batch", shots, "-o", out, "-f", "gif", "--json", *RUN)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.gif", "b.gif"] and no_partials(out)


def _cli(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "toonctl", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_sigterm_in_a_real_process(tmp_path, keys):
    """The entry point installs the handler: ``kill`` of a running ``toonctl`` exits 130 without output."""
    out = tmp_path / "o.gif"
    proc = _cli("interpolate", *keys, "-o", out, *TINY, "--size", "32x64", "--steps", "1000")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "Loading" not in proc.stderr.readline():
        pass
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().endswith("Interrupted.")
    assert not out.exists() and no_partials(tmp_path)


def test_a_failed_download_leaves_no_lock(tmp_path, monkeypatch):
    """`make demo` after a failed `weights fetch`: huggingface_hub's filelock left download/<name>.lock behind."""
    import fcntl

    import huggingface_hub

    locks = tmp_path / "w" / ".cache" / "huggingface" / "download"

    def failing_download(*, filename, local_dir, **kwargs):
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{filename}.lock", "w") as lock:  # what filelock does, and leaves
            fcntl.flock(lock, fcntl.LOCK_EX)
        raise ConnectionResetError("reset")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    stderr = user_error(invoke("weights", "fetch", "--dest", tmp_path / "w"))
    assert "network error" in stderr and not list(locks.iterdir())
    held = open(locks / "model.ckpt.lock", "w")  # a lock another download holds is left alone
    fcntl.flock(held, fcntl.LOCK_EX)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kwargs: _enospc())
    try:
        user_error(invoke("weights", "fetch", "--dest", tmp_path / "w"))
        # flock locks belong to the open file: this process's second open cannot take it, so it stays
        assert (locks / "model.ckpt.lock").exists()
    finally:
        held.close()
