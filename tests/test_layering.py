"""The layers of docs/architecture.md, enforced on the source: who may import whom, and the CLI stays thin.

Every ``import`` and ``from ... import`` of every module under ``src/toonctl`` is read with ``ast`` (imports
inside functions too: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from toonctl.presets import CONTROL_COMPONENTS, MODEL_COMPONENTS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "toonctl"


def _modules(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (``from toonctl.x import y`` gives ``toonctl.x`` and
    ``toonctl.x.y``: y may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _offending(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in _modules(folder):
        bad = sorted(n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE))] = bad
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # the networks: torch and their own configs only
        ("models", ("toonctl.cli", "toonctl.io", "toonctl.convert", "toonctl.pipelines", "typer", "rich")),
        # the sampler: pure functions of tensors, no model code
        ("samplers", ("toonctl.models", "toonctl.cli", "toonctl.io", "toonctl.convert", "typer", "rich")),
        # the converters know files and networks, not tasks or the terminal
        ("convert", ("toonctl.cli", "toonctl.pipelines", "typer", "rich")),
        # tasks: tensors in, tensors out
        ("pipelines", ("toonctl.cli", "toonctl.io", "typer", "rich", "imageio", "PIL")),
        ("io", ("toonctl.cli", "toonctl.pipelines", "typer", "rich")),
        ("weights", ("toonctl.cli", "typer", "rich")),
    ],
)
def test_layer_imports(folder, forbidden):
    assert _offending(folder, forbidden) == {}


def test_only_the_cli_imports_the_cli_and_typer():
    entry = PACKAGE / "__main__.py"  # python -m toonctl: runs the CLI
    library = [p for p in _modules() if "cli" not in p.relative_to(PACKAGE).parts and p != entry]
    bad = {
        str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p) if n.startswith(("toonctl.cli", "typer")))
        for p in library
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_command_module_imports_another():
    """Command modules share only the ``_``-prefixed helpers; ``app.py`` wires them together."""
    commands = {p.stem for p in _modules("cli") if not p.stem.startswith("_") and p.stem != "app"}
    for path in _modules("cli"):
        if path.stem == "app":
            continue
        others = {n.split(".")[2] for n in _imports(path) if n.startswith("toonctl.cli.") and n.count(".") >= 2}
        assert not (others & commands) - {path.stem}, (path.name, others & commands)


def test_the_cli_defines_no_model_logic():
    """The CLI parses, calls the library and prints: no torch, no networks, no sampler, no tensor code."""
    for path in _modules("cli"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _imports(path)
        heavy = sorted(
            n
            for n in imported
            if n.split(".")[0] in ("torch", "numpy") or n.startswith(("toonctl.models", "toonctl.samplers"))
        )
        assert heavy == [], (path.name, heavy)
        classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
        modules = [c for c in classes if c.endswith(("Module", "Pipeline", "Encoder", "Decoder"))]
        assert modules == [], (path.name, modules)


def test_components_are_listed_once():
    from toonctl.convert.tooncrafter import COMPONENTS
    from toonctl.pipelines.controls import CONTROLS
    from toonctl.pipelines.placement import COMPONENT_NAMES

    assert tuple(COMPONENTS) == MODEL_COMPONENTS
    assert tuple(CONTROLS) == CONTROL_COMPONENTS
    assert COMPONENT_NAMES == (*MODEL_COMPONENTS, *CONTROL_COMPONENTS)


def test_the_public_weights_names_stay_importable():
    """Other code builds on these (``toonctl.weights`` is a package of one module per job)."""
    import toonctl.weights as weights

    for name in ("load_weights", "config_for", "resolve_weights", "weights_dir", "fetch", "verify", "list_weights",
                 "import_checkpoint"):  # fmt: skip
        assert callable(getattr(weights, name)), name
