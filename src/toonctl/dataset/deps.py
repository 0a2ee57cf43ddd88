"""Lazy imports of the optional ``dataset`` extra (OpenCV, PySceneDetect) with one clear error when absent."""

from __future__ import annotations

from types import ModuleType

from toonctl.errors import ToonctlError

EXTRA_HINT = "install the dataset extra: pip install 'toonctl[dataset]' (scenedetect, opencv-python-headless)"


class MissingExtraError(ToonctlError):
    """An optional package that a command needs is not installed."""

    hint = EXTRA_HINT


def cv2() -> ModuleType:
    """The ``cv2`` module (OpenCV), or ``MissingExtraError``."""
    try:
        import cv2 as module
    except ImportError as exc:
        hint = None
        if "libGL" in str(exc):  # PySceneDetect 0.7 pulls in opencv-python, the GUI build, over the headless one
            hint = "pip uninstall -y opencv-python && pip install --force-reinstall opencv-python-headless"
        raise MissingExtraError(f"toonctl dataset needs OpenCV, which cannot be imported ({exc})", hint=hint) from None
    return module


def scenedetect() -> ModuleType:
    """The ``scenedetect`` module (PySceneDetect), or ``MissingExtraError``."""
    try:
        import scenedetect as module
    except ImportError as exc:
        raise MissingExtraError(f"toonctl dataset needs PySceneDetect, which cannot be imported ({exc})") from None
    return module


def check_installed() -> None:
    """Raise ``MissingExtraError`` now (before any work) if the extra is missing."""
    cv2()
    scenedetect()
