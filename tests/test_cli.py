"""The CLI shell: help and version work, fast, without importing torch."""

from __future__ import annotations

import subprocess
import sys

from toonctl import __version__

_NO_TORCH = """
import sys
from toonctl.cli.app import main
sys.argv = ["toonctl", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code or 0
else:
    code = 0
assert "torch" not in sys.modules, "toonctl imported torch for --help/--version"
sys.exit(code)
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, timeout=60)


def test_version_without_torch():
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"toonctl {__version__}"


def test_help_without_torch():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "interpolation" in result.stdout


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "toonctl", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and __version__ in result.stdout


def test_every_help_screen_is_tidy():
    """Flags take no value: the help must not print ``<bool>`` beside them (Typer does by default)."""
    import typer
    from typer.testing import CliRunner

    from toonctl.cli.app import app

    root = typer.main.get_command(app)
    commands = [[]] + [[name] for name in root.commands]
    for group_name, group in root.commands.items():  # every sub-command of every group (weights, dataset, ...)
        commands += [[group_name, name] for name in getattr(group, "commands", {})]
    assert len(commands) >= 1 + 8 + 5 + 4 and ["dataset", "build"] in commands  # more as commands are added
    assert ["train", "unet"] in commands and ["train", "export"] in commands and ["train", "decoder"] in commands
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (command, result.output)
        assert "--help" in result.output and "<bool>" not in result.output, command
    # Docstring paragraphs are reflowed by Rich, not broken where the source wraps.
    colorize = CliRunner().invoke(app, ["colorize", "--help"], env={"COLUMNS": "200"}).output
    assert "it serves as both key frames of the first run" in colorize
    quiet_line = next(line for line in CliRunner().invoke(app, ["interpolate", "--help"]).output.splitlines()
                      if "--quiet" in line)  # fmt: skip
    assert "Print only the result." in quiet_line
