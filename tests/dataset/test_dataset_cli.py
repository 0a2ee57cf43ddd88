"""``toonctl dataset build|merge|inspect`` through the CLI, ``inspect``'s decode check, the missing-extra error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toonctl.dataset import deps
from toonctl.dataset.inspection import inspect_dataset


def toonctl(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "toonctl", "dataset", *map(str, args)], capture_output=True, text=True, env=env
    )


def test_build_cli_json_summary_and_exit_3_on_a_bad_episode(episodes, bad_inputs, tmp_path):
    done = toonctl("build", episodes / "ep1.mp4", bad_inputs["empty"], "-o", tmp_path / "d", "--json")
    assert done.returncode == 3, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["kept"], summary["dropped"]["static"], summary["failed_episodes"]) == (2, 1, 1)
    assert "Warning: skipped" in done.stderr and "empty file" in done.stderr
    assert "Traceback" not in done.stderr


def invoke(*args: str):
    """The CLI in this process (faster than a subprocess): ``result.stdout``, ``.stderr``, ``.exit_code``."""
    from typer.testing import CliRunner

    from toonctl.cli.app import app

    return CliRunner().invoke(app, ["dataset", *map(str, args)], env={"COLUMNS": "120"})


def test_build_cli_table_and_usage_errors(episodes, tmp_path):
    done = invoke("build", episodes / "ep1.mp4", "-o", tmp_path / "d")
    assert done.exit_code == 0, done.output
    assert "static" in done.stdout and "kept" in done.stdout and "manifest.csv" in done.stdout
    assert "[1/1] ep1.mp4 done" in done.stderr  # progress with ETA when stderr is not a terminal
    bad = invoke("build", episodes, "-o", tmp_path / "e", "--shard", "2/2")
    assert bad.exit_code == 2 and "0 <= I < N" in bad.stderr
    bad = invoke("build", episodes, "-o", tmp_path / "e", "--min-shot", "3", "--max-shot", "2")
    assert bad.exit_code == 2 and "--min-shot" in bad.stderr
    bad = invoke("build", episodes, "-o", tmp_path / "e", "--min-alignment", "0.2")
    assert bad.exit_code == 2 and "need --score or --weights" in bad.stderr
    missing = invoke("build", tmp_path / "nowhere", "-o", tmp_path / "e")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: ") and "does not exist" in missing.stderr
    absent = invoke("build", episodes, "-o", tmp_path / "e", "--weights", tmp_path / "absent.ckpt")
    assert absent.exit_code == 1 and "not a checkpoint file" in absent.stderr
    assert not (tmp_path / "e" / "parts").exists() or not any((tmp_path / "e" / "parts").iterdir())  # no work done


def test_inspect_finds_clips_that_fail_to_decode(built, tmp_path):
    summary = inspect_dataset(built)
    assert (summary["clips"], summary["episodes"], summary["frames"], summary["seconds"]) == (4, 2, 96, 8.0)
    assert summary["failed"] == [] and summary["drawing_rates"] == {"1": 2, "2": 2}
    assert summary["columns"]["drawing_rate"]["max"] == 2
    broken = Path(shutil.copytree(built, tmp_path / "broken"))
    victim = sorted((broken / "clips").rglob("*.mp4"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    done = invoke("inspect", broken, "--json")
    assert done.exit_code == 3, done.output
    failed = json.loads(done.stdout)["failed"]
    assert [f["path"] for f in failed] == [str(victim)]
    table = invoke("inspect", built)
    assert table.exit_code == 0 and "all 4 clips decode" in table.stdout and "drawing_rate" in table.stdout


def test_merge_cli_refuses_a_folder_that_is_not_a_dataset(built, tmp_path):
    done = invoke("merge", built, tmp_path, "-o", tmp_path / "m")
    assert done.exit_code == 1 and "is not a dataset folder" in done.stderr


def test_missing_extra_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scenedetect", None)  # import fails as if not installed
    with pytest.raises(deps.MissingExtraError, match="PySceneDetect") as info:
        deps.check_installed()
    assert "toonctl[dataset]" in info.value.hint
