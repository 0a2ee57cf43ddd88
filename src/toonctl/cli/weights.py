"""``toonctl weights``: download, import, convert, list and verify model weights (``toonctl.weights``).

Parsing and printing only; the work is in ``toonctl.weights``, imported inside each command so that
``toonctl --help`` stays fast and never imports torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from toonctl.cli import _options as opt
from toonctl.cli._errors import EXIT_ERROR, handle_errors
from toonctl.cli._help import Command, Group
from toonctl.cli._output import Output, examples_epilog
from toonctl.dtypes import DTYPE_NAMES

# the dtypes of toonctl.dtypes, smallest first: fp16 (the default), bf16, fp32
SaveDtype = Enum("SaveDtype", {name: name for name in reversed(DTYPE_NAMES)}, type=str)


DestOpt = Annotated[
    Path | None,
    typer.Option("--dest", help="Weights folder. Default: $TOONCTL_WEIGHTS, else weights/", show_default=False),
]
SaveDtypeOpt = Annotated[SaveDtype, typer.Option("--dtype", help="Floating dtype of the converted weights.")]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="Name of the converted directory. Default: tooncrafter-512-<dtype>.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing converted directory.")]


weights_app = typer.Typer(
    cls=Group,
    help="Download, import, convert, list and verify model weights.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@contextlib.contextmanager
def _component_progress(out: Output, description: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """A Rich bar over the converted components (None when progress is off)."""
    with out.progress() as progress:
        if progress is None:
            yield None
            return
        task = progress.add_task(description, total=None)

        def update(name: str, index: int, count: int) -> None:
            progress.update(task, description=f"{description} {name}", completed=index - 1, total=count)

        yield update
        progress.update(task, description=description, completed=progress.tasks[0].total or 0)


@contextlib.contextmanager
def _byte_progress(out: Output, description: str) -> Iterator[Callable[[int, int], None] | None]:
    """A Rich bar in bytes (None when progress is off)."""
    if not out.show_progress:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=out.err) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _convert(path: Path, dest: Path | None, out: Output, **kwargs) -> Path:
    from toonctl.weights import import_checkpoint

    with _component_progress(out, "converting") as progress:
        return import_checkpoint(path, dest, progress=progress, **kwargs)


def _report_converted(out: Output, source: Path, converted: Path, dtype: str) -> None:
    from toonctl.weights import human_size

    size = sum(p.stat().st_size for p in converted.iterdir())
    out.result(
        f"converted {source} -> {converted}/ ({dtype}, {human_size(size)})",
        source=str(source),
        path=str(converted),
        dtype=dtype,
        size=size,
    )


FETCH_EXAMPLES = [
    ("The model (model.ckpt, 10.5 GB) into weights/", "toonctl weights fetch"),
    ("Also the sketch encoder and extractor", "toonctl weights fetch --sketch"),
    ("Then convert it to fp16 components (half the size, loads faster)", "toonctl weights fetch --convert"),
    ("Into another folder, with a token", "HF_TOKEN=hf_... toonctl weights fetch --dest /data/toon"),
]


@weights_app.command(cls=Command, epilog=examples_epilog(FETCH_EXAMPLES))
@handle_errors
def fetch(
    sketch: Annotated[
        bool, typer.Option("--sketch", help="Also sketch_encoder.ckpt and sketch_extractor.pth.")
    ] = False,
    dest: DestOpt = None,
    convert: Annotated[
        bool, typer.Option("--convert/--no-convert", help="Also convert model.ckpt to a components directory.")
    ] = False,
    dtype: SaveDtypeOpt = SaveDtype.fp16,
    json_output: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Download the official ToonCrafter files from Hugging Face (Doubiiu/ToonCrafter).

    Honours HF_TOKEN, HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE. Files already there are not downloaded again.
    """
    from toonctl.weights import HF_REPO, MODEL_FILES, OFFICIAL_FILES, SKETCH_FILES, human_size, weights_dir
    from toonctl.weights import fetch as fetch_files

    out = Output(json_mode=json_output, quiet=quiet)
    names = [*MODEL_FILES, *(SKETCH_FILES if sketch else ())]
    dest = dest if dest is not None else weights_dir()
    total = sum(OFFICIAL_FILES[n].approx_size for n in names)
    out.info(f"Fetching {', '.join(names)} (about {human_size(total)}) from {HF_REPO} into {dest}/")
    paths = fetch_files(names, dest, progress=out.show_progress)
    sizes = {p.name: p.stat().st_size for p in paths}
    converted = None
    if convert:
        converted = _convert(dest / "model.ckpt", dest, out, dtype=dtype.value, overwrite=True)
        out.info(f"converted to {converted}/")
    out.result(
        f"{len(paths)} file(s) in {dest}/ ({human_size(sum(sizes.values()))})"
        + (f"; converted to {converted.name}/" if converted else ""),
        dest=str(dest),
        files={p.name: str(p) for p in paths},
        sizes=sizes,
        converted=str(converted) if converted else None,
    )


IMPORT_EXAMPLES = [
    ("An official model.ckpt downloaded elsewhere", "toonctl weights import ~/Downloads/model.ckpt"),
    (
        "kijai's pruned fp16 file, CLIP towers from OpenCLIP ViT-H-14",
        "toonctl weights import tooncrafter_512_interp-pruned-fp16.safetensors --clip open_clip_pytorch_model.bin",
    ),
    ("In bf16, under a name of your choice", "toonctl weights import model.safetensors --dtype bf16 --name toon-bf16"),
]


@weights_app.command("import", cls=Command, epilog=examples_epilog(IMPORT_EXAMPLES))
@handle_errors
def import_(
    path: Annotated[Path, typer.Argument(help="model.ckpt, an official-layout .safetensors or a pruned file.")],
    clip: Annotated[
        Path | None,
        typer.Option(
            "--clip",
            help="CLIP towers for a pruned file: OpenCLIP ViT-H-14 (open_clip_pytorch_model.bin) or a model.ckpt.",
        ),
    ] = None,
    dest: DestOpt = None,
    dtype: SaveDtypeOpt = SaveDtype.fp16,
    name: NameOpt = None,
    config: opt.ConfigOpt = None,
    force: ForceOpt = False,
    json_output: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Import a local checkpoint into the weights folder as a converted model.

    A pruned checkpoint without the CLIP towers (kijai's tooncrafter_512_interp-pruned-fp16.safetensors)
    needs --clip.
    """
    out = Output(json_mode=json_output, quiet=quiet)
    converted = _convert(path, dest, out, clip=clip, dtype=dtype.value, name=name, config=config, overwrite=force)
    _report_converted(out, path, converted, dtype.value)


CONVERT_EXAMPLES = [
    ("The downloaded model to weights/tooncrafter-512-fp16/", "toonctl weights convert weights/model.ckpt"),
    ("In bf16", "toonctl weights convert weights/model.ckpt --dtype bf16"),
    ("Into another folder", "toonctl weights convert model.safetensors --dest /data/toon --name toon"),
]


@weights_app.command(cls=Command, epilog=examples_epilog(CONVERT_EXAMPLES))
@handle_errors
def convert(
    path: Annotated[Path, typer.Argument(help="model.ckpt or an official-layout .safetensors.")],
    dtype: SaveDtypeOpt = SaveDtype.fp16,
    dest: DestOpt = None,
    name: NameOpt = None,
    config: opt.ConfigOpt = None,
    force: ForceOpt = False,
    json_output: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Convert an official-layout checkpoint to per-component safetensors (loads faster, fp16 halves the size)."""
    out = Output(json_mode=json_output, quiet=quiet)
    converted = _convert(path, dest, out, dtype=dtype.value, name=name, config=config, overwrite=force)
    _report_converted(out, path, converted, dtype.value)


LIST_EXAMPLES = [
    ("What weights/ holds", "toonctl weights list"),
    ("For scripts", "toonctl weights list --json"),
    ("Another folder", "TOONCTL_WEIGHTS=/data/toon toonctl weights list"),
]


@weights_app.command("list", cls=Command, epilog=examples_epilog(LIST_EXAMPLES))
@handle_errors
def list_(dest: DestOpt = None, json_output: opt.JsonOpt = False, quiet: opt.QuietOpt = False) -> None:
    """List the weights folder: official files, converted models, partial downloads."""
    from toonctl.weights import human_size, list_weights, weights_dir

    out = Output(json_mode=json_output, quiet=quiet)
    dest = dest if dest is not None else weights_dir()
    entries = list_weights(dest)
    if json_output:
        out.result(f"{len(entries)} item(s) in {dest}/", dest=str(dest), entries=[e.to_dict() for e in entries])
        return
    if not entries:
        out.result(f"no weights in {dest}/")
        out.info("Get them with `toonctl weights fetch` or `toonctl weights import FILE`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "size", "complete", "note", box=None, pad_edge=False)
    for e in entries:
        table.add_row(e.name, e.kind, human_size(e.size), "yes" if e.complete else "[red]no[/]", e.note)
    Console(highlight=False, soft_wrap=True).print(table)
    out.result(f"{len(entries)} item(s) in {dest}/")


VERIFY_EXAMPLES = [
    ("The model `toonctl interpolate` would use", "toonctl weights verify"),
    ("A download, loading every tensor", "toonctl weights verify weights/model.ckpt --full"),
    ("A converted model, for scripts", "toonctl weights verify weights/tooncrafter-512-fp16 --json"),
    ("The sketch encoder", "toonctl weights verify weights/sketch_encoder.ckpt"),
]


@weights_app.command(cls=Command, epilog=examples_epilog(VERIFY_EXAMPLES))
@handle_errors
def verify(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Checkpoint file (model or sketch file) or converted directory. Default: the model interpolate "
            "would use."
        ),
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Also load every tensor (slow, needs the memory).")] = False,
    config: opt.ConfigOpt = None,
    json_output: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Check weights: size, sha256 (against the Hub's when it was downloaded here), keys and shapes."""
    from toonctl.weights import human_size, resolve_weights
    from toonctl.weights import verify as verify_weights

    out = Output(json_mode=json_output, quiet=quiet)
    if path is None:
        path, _ = resolve_weights(None, config)
    with _byte_progress(out, f"hashing {path.name}") as progress:
        report = verify_weights(path, config=config, full=full, progress=progress)
    fields = report.to_dict()
    if not json_output:
        digest = report.sha256 or ", ".join(f"{k} {v[:12]}…" for k, v in report.files.items())
        match = {True: " (matches the Hub)", False: " (DIFFERS from the Hub)", None: ""}[report.sha256_matches]
        out.info(f"{report.path}: {report.kind}, {human_size(report.size)}")
        out.info(f"sha256: {digest}{match}")
        out.info(
            f"components: {', '.join(report.components) or '-'}" + (" (all loaded)" if report.fully_loaded else "")
        )
    if report.ok:
        out.result(f"{report.path} is OK ({report.kind}, {human_size(report.size)})", **fields)
        return
    if json_output:
        out.result(f"{report.path} failed verification", **fields)
    for problem in report.problems:
        out.err.print(f"Error: {problem}", markup=False, soft_wrap=True)  # one line, however narrow the terminal
    raise typer.Exit(EXIT_ERROR)
