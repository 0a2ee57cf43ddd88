"""What is in the weights folder and whether it is whole (``toonctl weights list`` and ``weights verify``).

Listing reads only file headers; verifying hashes the files and checks every key and shape against the
architecture on the meta device (``full``: really loads each component, one at a time).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toonctl.errors import CheckpointError, ToonctlError, WeightsNotFoundError
from toonctl.weights.files import (
    CHECKPOINT_SUFFIXES,
    OFFICIAL_FILES,
    SIZE_TOLERANCE,
    ByteProgress,
    OfficialFile,
    human_size,
    weights_dir,
)
from toonctl.weights.importing import MISSING_CLIP, checkpoint_layout
from toonctl.weights.resolve import config_for

if TYPE_CHECKING:
    from toonctl.models.configs import ToonCrafterConfig


@dataclass(frozen=True)
class WeightsEntry:
    """One thing in the weights folder.

    ``kind``: ``official`` (a file of the Hub repository), ``checkpoint`` (another checkpoint file),
    ``converted`` (a converted directory) or ``partial`` (an interrupted huggingface_hub download).
    """

    name: str
    path: Path
    kind: str
    size: int
    complete: bool
    note: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def list_weights(dest: str | Path | None = None) -> list[WeightsEntry]:
    """What the weights folder holds: official files, other checkpoints, converted dirs, partial downloads.

    "complete" is a structural check that reads no tensor data: the zip directory of a ``torch.save`` file,
    or the header and length of a safetensors file; for a converted directory every component file too.
    """
    from toonctl.convert.components import is_converted_dir

    dest = Path(dest) if dest is not None else weights_dir()
    if not dest.is_dir():
        return []
    entries = []
    for name, spec in OFFICIAL_FILES.items():
        path = dest / name
        if path.is_file():
            entries.append(_file_entry(path, "official", spec))
    for path in sorted(dest.iterdir()):
        if path.name.startswith(".") or path.name in OFFICIAL_FILES:
            continue
        if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
            entries.append(_file_entry(path, "checkpoint", None))
        elif is_converted_dir(path):
            entries.append(_converted_entry(path))
    partial_dir = dest / ".cache" / "huggingface" / "download"
    if partial_dir.is_dir():
        for path in sorted(partial_dir.glob("*.incomplete")):
            note = "interrupted download (not resumed across runs); safe to delete"
            entries.append(WeightsEntry(path.name, path, "partial", path.stat().st_size, False, note))
    return entries


def _converted_entry(path: Path) -> WeightsEntry:
    from toonctl.convert.components import converted_dtype, dtype_name, missing_files

    parts = [p for p in path.iterdir() if p.is_file()]
    problems = [f"missing {f}" for f in missing_files(path)]
    problems += [f"truncated {p.name}" for p in parts if p.suffix == ".safetensors" and file_complete(p) is False]
    try:
        note = dtype_name(converted_dtype(path))
    except ToonctlError as exc:
        note, problems = "?", [*problems, str(exc)]
    size = sum(p.stat().st_size for p in parts)
    return WeightsEntry(path.name, path, "converted", size, not problems, "; ".join([note, *problems]))


def _file_entry(path: Path, kind: str, spec: OfficialFile | None) -> WeightsEntry:
    size = path.stat().st_size
    complete = file_complete(path)
    note = ""
    if spec is not None and abs(size - spec.approx_size) > SIZE_TOLERANCE * spec.approx_size:
        note = f"expected about {human_size(spec.approx_size)}"
        if complete is None:
            complete = False
    return WeightsEntry(path.name, path, kind, size, bool(complete) if complete is not None else True, note)


def file_complete(path: Path) -> bool | None:
    """Whether a checkpoint file is whole, without reading its tensors; None when the format cannot tell.

    * safetensors: the header parses and the file is exactly as long as the largest data offset says;
    * ``torch.save`` zip files: the zip's central directory (at the very end of the file) is readable.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if path.suffix == ".safetensors":
            return _safetensors_complete(path, head)
        if head[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(path) as zf:
                return len(zf.namelist()) > 0
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, struct.error):
        return False
    return None


def _safetensors_complete(path: Path, head: bytes) -> bool:
    (header_len,) = struct.unpack("<Q", head)
    size = path.stat().st_size
    if header_len > size - 8:
        return False
    with open(path, "rb") as f:
        f.seek(8)
        header = json.loads(f.read(header_len))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return size == 8 + header_len + max(ends, default=0)


@dataclass
class VerifyReport:
    """What ``verify`` found. ``ok``: it loads, and its sha256 matches the Hub's when that is known."""

    path: Path
    # checkpoint files: "official" / "pruned" / "sketch_encoder" / "sketch_extractor" ("checkpoint" when
    # unreadable); or "converted"
    kind: str
    size: int
    sha256: str | None = None  # files only
    files: dict[str, str] = field(default_factory=dict)  # converted dirs: file name -> sha256
    hub_sha256: str | None = None  # recorded by huggingface_hub when it downloaded the file
    loads: bool = False
    fully_loaded: bool = False
    components: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def sha256_matches(self) -> bool | None:
        return None if self.hub_sha256 is None else self.sha256 == self.hub_sha256

    @property
    def ok(self) -> bool:
        return self.loads and self.sha256_matches is not False

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path), "sha256_matches": self.sha256_matches, "ok": self.ok}


def sha256_file(path: str | Path, *, progress: ByteProgress | None = None, chunk_size: int = 8 << 20) -> str:
    """The file's sha256, read in ``chunk_size`` pieces; ``progress(done, total)`` after each."""
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def hub_sha256(path: Path) -> str | None:
    """The sha256 huggingface_hub recorded when it downloaded ``path`` into its folder (LFS files' etag).

    Read from ``<folder>/.cache/huggingface/download/<name>.metadata`` (commit, etag, timestamp); ignored
    when the file changed after the download, as huggingface_hub itself does.
    """
    meta = path.parent / ".cache" / "huggingface" / "download" / f"{path.name}.metadata"
    try:
        _commit, etag, timestamp = meta.read_text(encoding="utf-8").splitlines()[:3]
        if path.stat().st_mtime - 1 > float(timestamp):
            return None
    except (OSError, ValueError):
        return None
    return etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None


def verify(
    path: str | Path,
    *,
    config: str | Path | ToonCrafterConfig | None = None,
    full: bool = False,
    progress: ByteProgress | None = None,
) -> VerifyReport:
    """Check a checkpoint file (the model or a sketch file) or converted directory: size, sha256, whether it loads.

    The load check builds every component on the meta device and compares keys and shapes with the file
    (no tensor data is read); ``full=True`` then really loads each component on the CPU, one at a time.
    Problems are collected in the report rather than raised; a missing ``path`` raises.

    Args:
        path: ``model.ckpt``, a ``.safetensors`` checkpoint, ``sketch_encoder.ckpt``, ``sketch_extractor.pth``
            or a converted directory.
        config: the architecture (default: ``config_for(path)``); a sketch encoder must fit its UNet.
        full: also load the weights.
        progress: ``(bytes done, bytes total)`` while hashing, over all files.
    """
    from toonctl.convert.components import is_converted_dir

    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"{path} does not exist", hint="see `toonctl weights list`")
    if config is not None:
        config = config_for(path, config)  # a bad --config is the caller's error: raise it before hashing
    if path.is_dir() and is_converted_dir(path):
        report = _verify_converted(path, progress)
    elif path.is_file():
        report = VerifyReport(path=path, kind="checkpoint", size=path.stat().st_size)
        report.sha256 = sha256_file(path, progress=progress)
        report.hub_sha256 = hub_sha256(path)
    else:
        raise CheckpointError(f"{path} is neither a checkpoint file nor a converted model directory")
    try:
        _check_loads(report, config_for(path, config), full=full)
    except ToonctlError as exc:
        report.problems.append(str(exc))
    if report.sha256_matches is False:
        report.problems.append(f"sha256 differs from the Hub's ({report.hub_sha256}): re-download it")
    return report


def _verify_converted(path: Path, progress: ByteProgress | None) -> VerifyReport:
    parts = sorted(p for p in path.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in parts)
    report = VerifyReport(path=path, kind="converted", size=total)
    offset = 0
    for part in parts:
        step = None if progress is None else (lambda done, _t, base=offset: progress(base + done, total))
        report.files[part.name] = sha256_file(part, progress=step)
        offset += part.stat().st_size
    return report


def _check_loads(report: VerifyReport, config: ToonCrafterConfig, *, full: bool) -> None:
    from toonctl.convert.components import check_architecture, check_converted, load_converted
    from toonctl.convert.tooncrafter import COMPONENTS, load_components, load_schedule, read_state_dict
    from toonctl.convert.tooncrafter import split_state_dict as split

    if report.kind == "converted":
        check_converted(report.path, config=config)
        report.loads, report.components = True, list(COMPONENTS)
        for name in COMPONENTS if full else ():
            load_converted(report.path, components=[name])
        report.fully_loaded = full
        return
    state_dict = read_state_dict(report.path)
    sketch = sketch_file_kind(state_dict)
    if sketch is not None:
        _check_sketch_file(report, state_dict, sketch, config, full=full)
        return
    report.kind = checkpoint_layout(state_dict)
    names = [n for n in COMPONENTS if report.kind == "official" or n not in ("text_encoder", "image_encoder")]
    plan = split(state_dict, config, names)
    check_architecture(state_dict, plan, config)
    load_schedule(state_dict, plan["schedule"], config)
    report.components = names
    if report.kind == "pruned":
        report.problems.append(MISSING_CLIP.format(path=report.path))
    report.loads = report.kind == "official"
    for name in names if full else ():
        load_components(report.path, config, components=[name])
    report.fully_loaded = full


def sketch_file_kind(keys: Iterable[str]) -> str | None:
    """``"sketch_encoder"`` or ``"sketch_extractor"`` when the keys are those of a sketch file, else None."""
    from toonctl.checkpoint import strip_shared_prefix
    from toonctl.models.sketch_encoder import CONTROL_MODEL_PREFIX
    from toonctl.models.sketch_extractor import MODULE_PREFIX

    keys = list(keys)
    if any(k.startswith("input_hint_block.") for k in strip_shared_prefix(keys, CONTROL_MODEL_PREFIX)):
        return "sketch_encoder"
    ours = strip_shared_prefix(keys, MODULE_PREFIX)
    if ours and all(k.startswith("model.model.") for k in ours):
        return "sketch_extractor"
    return None


def _check_sketch_file(
    report: VerifyReport, state_dict: Mapping, kind: str, config: ToonCrafterConfig, *, full: bool
) -> None:
    """The sketch encoder is checked against the one that fits ``config``'s UNet; the extractor as it is."""
    from toonctl.models.sketch_encoder import SketchEncoderConfig, check_sketch_encoder, load_sketch_encoder
    from toonctl.models.sketch_extractor import check_sketch_extractor, load_sketch_extractor

    report.kind = kind
    if kind == "sketch_encoder":
        sketch_config = SketchEncoderConfig.for_unet(config.unet)
        check_sketch_encoder(state_dict, sketch_config, path=report.path)
        if full:
            load_sketch_encoder(report.path, sketch_config)
    else:
        check_sketch_extractor(state_dict, path=report.path)
        if full:
            load_sketch_extractor(report.path)
    report.components, report.loads, report.fully_loaded = [kind], True, full
