"""Fixtures of the dataset tests: synthetic episodes (see ``synthetic.py``) and a dataset built once from them.

``tests/dataset`` is a package (``__init__.py``) so that this file is imported as ``dataset.conftest``, not as
the ``conftest`` other test folders import ``TINY_A`` from.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytest.importorskip("cv2", reason="the dataset extra (opencv-python-headless) is not installed")
pytest.importorskip("scenedetect", reason="the dataset extra (scenedetect) is not installed")

from dataset.synthetic import CAPTION, write_episode  # noqa: E402


@pytest.fixture(scope="session")
def episodes(tmp_path_factory) -> Path:
    """``episodes/``: ``ep1.mp4`` (moving, static, twos; caption sidecar) and ``season/ep2.mp4`` (static, twos,
    moving; no caption)."""
    folder = tmp_path_factory.mktemp("episodes")
    write_episode(folder / "ep1.mp4", caption=CAPTION)
    write_episode(folder / "season" / "ep2.mp4", ("static", "twos", "moving"))
    return folder


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    """An unreadable video, a zero-length file and an audio-only file."""
    import imageio_ffmpeg

    folder = tmp_path_factory.mktemp("bad")
    (folder / "garbage.mp4").write_bytes(b"this is not a video\n" * 50)
    (folder / "empty.mp4").write_bytes(b"")
    audio = folder / "audio.m4a"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", str(audio)],
        check=True,
    )  # fmt: skip
    return {"garbage": folder / "garbage.mp4", "empty": folder / "empty.mp4", "audio": audio}


@pytest.fixture(scope="session")
def built(episodes, tmp_path_factory) -> Path:
    """The dataset of ``episodes`` with the default settings and a fixed prompt (built once)."""
    from toonctl.dataset.build import build_dataset
    from toonctl.dataset.settings import BuildSettings

    root = tmp_path_factory.mktemp("built") / "data"
    build_dataset([episodes], root, BuildSettings(prompt="a cartoon"))
    return root
