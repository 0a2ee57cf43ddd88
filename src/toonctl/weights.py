"""Where the model weights live and how they get there: download, import, list, verify and resolve.

The weights folder is ``weights/`` under the current directory, or ``$TOONCTL_WEIGHTS``. It holds the
official files of the Hugging Face repository ``Doubiiu/ToonCrafter`` (``model.ckpt``,
``sketch_encoder.ckpt``, ``sketch_extractor.pth``) and converted models (``convert/components.py``), one
directory each. Importing this module does not import torch (the CLI reads its constants for ``--help``);
the functions that touch tensors import it when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toonctl.errors import CheckpointError, ConfigError, OutputError, ToonctlError, UsageError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch

    from toonctl.models.configs import ToonCrafterConfig

DEFAULT_WEIGHTS_DIR = Path("weights")
WEIGHTS_ENV = "TOONCTL_WEIGHTS"
HF_REPO = "Doubiiu/ToonCrafter"
CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors", ".pth", ".pt", ".bin")
SIZE_TOLERANCE = 0.03  # the Hub lists sizes to three digits; exact byte counts are not recorded here


@dataclass(frozen=True)
class OfficialFile:
    """One file of ``Doubiiu/ToonCrafter``. ``approx_size`` is the Hub's listed size (decimal units)."""

    name: str
    approx_size: int
    description: str


OFFICIAL_FILES: dict[str, OfficialFile] = {
    f.name: f
    for f in (
        OfficialFile("model.ckpt", 10_500_000_000, "ToonCrafter-512 interpolation model (fp32, official layout)"),
        OfficialFile("sketch_encoder.ckpt", 1_460_000_000, "sketch encoder for sketch-guided interpolation"),
        OfficialFile("sketch_extractor.pth", 218_000_000, "line-art extractor (Anime2Sketch)"),
    )
}
MODEL_FILES = ("model.ckpt",)
SKETCH_FILES = ("sketch_encoder.ckpt", "sketch_extractor.pth")
DTYPE_CHOICES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}

ByteProgress = Callable[[int, int], None]  # (bytes done, bytes total)
ComponentProgress = Callable[[str, int, int], None]  # (component, index from 1, count)


def weights_dir() -> Path:
    """The weights folder: ``$TOONCTL_WEIGHTS`` when set, else ``weights/`` under the current directory."""
    return Path(os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS_DIR)


def human_size(n: int) -> str:
    """``10500000000`` -> ``"10.5 GB"`` (decimal units, as the Hub lists them)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# -- fetch ---------------------------------------------------------------------------------------------


def fetch(
    files: Iterable[str], dest: str | Path | None = None, *, progress: bool = True, repo_id: str = HF_REPO
) -> list[Path]:
    """Download official files into ``dest`` with ``huggingface_hub.hf_hub_download(..., local_dir=dest)``.

    What huggingface_hub (checked in 2.4.0) does by itself:

    * ``HF_TOKEN`` (then the token file under ``HF_HOME``) authenticates; ``HF_ENDPOINT`` picks a mirror.
    * ``HF_HUB_OFFLINE=1``: no request is made. A file already in ``dest`` is returned as is; a missing one
      raises ``LocalEntryNotFoundError``, reported here as ``WeightsNotFoundError``.
    * A file already in ``dest`` whose recorded etag (``dest/.cache/huggingface/download/*.metadata``)
      matches the Hub is not downloaded again; without that record it is hashed and kept if the sha256
      matches. If the file is in the ``HF_HOME`` cache it is copied from there.
    * Resuming: a dropped connection is retried with HTTP ``Range`` requests inside the same call, and Xet
      downloads (``hf_xet``) reuse the chunks cached under ``HF_HOME/xet``. A download interrupted by killing
      the process is *not* resumed by plain HTTP: the partial file has a per-process name and is deleted.
    * The file is written to a temporary name and renamed: a file in ``dest`` is never half-written.

    Args:
        files: names from ``OFFICIAL_FILES``.
        dest: the weights folder (default ``weights_dir()``).
        progress: huggingface_hub's progress bars (on stderr).
        repo_id: the Hub repository.

    Returns:
        The local path of each file, in order.
    """
    import huggingface_hub
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    names = list(files)
    unknown = [n for n in names if n not in OFFICIAL_FILES]
    if unknown:
        raise ToonctlError(f"unknown file(s) {', '.join(unknown)}; the repository has {', '.join(OFFICIAL_FILES)}")
    dest = Path(dest) if dest is not None else weights_dir()
    check_dest(dest)
    dest.mkdir(parents=True, exist_ok=True)
    silence = not progress and not are_progress_bars_disabled()
    if silence:
        disable_progress_bars()
    try:
        paths = []
        for name in names:
            try:
                local = huggingface_hub.hf_hub_download(repo_id=repo_id, filename=name, local_dir=dest)
            except Exception as exc:
                mapped = _download_error(exc, name, repo_id, dest)
                if mapped is None:
                    raise
                raise mapped from exc
            paths.append(Path(local))
        return paths
    finally:
        if silence:
            enable_progress_bars()
        for name in names:
            remove_stale_lock(dest / ".cache" / "huggingface" / "download" / f"{name}.lock")


def remove_stale_lock(lock: Path) -> None:
    """Delete a download's lock file once no process holds it (huggingface_hub's filelock leaves it behind,
    also after a failed download). A lock another process holds is left alone."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.unlink(missing_ok=True)
    except OSError:
        pass  # held by another download: theirs to remove
    finally:
        os.close(fd)


def _download_error(exc: Exception, name: str, repo_id: str, dest: Path) -> ToonctlError | None:
    """One-line errors for huggingface_hub's failures (None: not a download failure, re-raise it)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    manual = f"or download {name} from https://huggingface.co/{repo_id} into {dest}/ yourself"
    if isinstance(exc, LocalEntryNotFoundError):  # offline, or the Hub could not be reached
        if constants.HF_HUB_OFFLINE or isinstance(exc.__cause__, OfflineModeIsEnabled):
            return WeightsNotFoundError(
                f"cannot download {name}: offline mode is on (HF_HUB_OFFLINE) and {dest / name} does not exist",
                hint=f"unset HF_HUB_OFFLINE, {manual}",
            )
        return WeightsNotFoundError(
            f"cannot download {name}: the Hugging Face Hub cannot be reached",
            hint=f"check your connection (or HF_ENDPOINT / proxy settings), {manual}",
        )
    if isinstance(exc, GatedRepoError):
        return ToonctlError(f"{repo_id} is gated: accept its terms on the Hub", hint="then set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return ToonctlError(f"repository {repo_id} not found (or private)", hint="set HF_TOKEN if it is private")
    if isinstance(exc, (EntryNotFoundError, RevisionNotFoundError)):
        return WeightsNotFoundError(f"{name} is not in {repo_id}", hint=f"see https://huggingface.co/{repo_id}")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "set HF_TOKEN" if status in (401, 403) else "try again later"
        return ToonctlError(f"downloading {name} failed (HTTP {status}): {first}", hint=hint)
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith(("httpx", "requests")):
        return WeightsNotFoundError(
            f"cannot download {name}: network error ({type(exc).__name__})", hint=f"check your connection, {manual}"
        )
    return None


# -- import / convert ----------------------------------------------------------------------------------


def checkpoint_layout(keys: Iterable[str]) -> str:
    """``"official"`` (every component) or ``"pruned"`` (UNet and VAE, no CLIP towers: kijai's fp16 file).

    Raises ``CheckpointError`` for files that are not ToonCrafter checkpoints.
    """
    from toonctl.convert.tooncrafter import IMAGE_EMBEDDER_PREFIX, TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX

    keys = list(keys)
    prefixes = (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX, IMAGE_EMBEDDER_PREFIX)
    has = {p: any(k.startswith(p) for k in keys) for p in prefixes}
    if not (has[UNET_PREFIX] and has[VAE_PREFIX]):
        raise CheckpointError(
            f"not a ToonCrafter checkpoint: no {UNET_PREFIX}* / {VAE_PREFIX}* keys",
            hint="expected the official model.ckpt, an official-layout .safetensors, or kijai's pruned fp16 file",
        )
    return "official" if has[TEXT_PREFIX] or has[IMAGE_EMBEDDER_PREFIX] else "pruned"


MISSING_CLIP = (
    "{path} has no CLIP text/image towers (a pruned checkpoint such as kijai's "
    "tooncrafter_512_interp-pruned-fp16.safetensors drops cond_stage_model.* and embedder.*); they are needed "
    "to run the model. Pass --clip PATH: an OpenCLIP ViT-H-14 checkpoint (open_clip_pytorch_model.bin or "
    "open_clip_model.safetensors from laion/CLIP-ViT-H-14-laion2B-s32b-b79k) or an official model.ckpt to take "
    "them from"
)


class _KeyView(Mapping):
    """Official key -> tensor, read lazily from one or more source mappings under other names."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[Mapping, str]] = {}

    def add(self, source: Mapping, renames: Mapping[str, str]) -> None:
        """Expose ``source[renames[official]]`` as ``self[official]``."""
        self._where.update((official, (source, key)) for official, key in renames.items())

    def __getitem__(self, key: str):
        source, name = self._where[key]
        return source[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def clip_renames(keys: Iterable[str], path: Path) -> dict[str, str]:
    """Map a CLIP checkpoint's keys to official ToonCrafter keys: ``{official: key in the file}``.

    Accepts the open_clip layout (``token_embedding.weight``, ``transformer.resblocks.*``, ``ln_final.*``,
    ``visual.*``) or an official ToonCrafter checkpoint (``cond_stage_model.model.*``, ``embedder.model.*``).
    Tensors inference never reads (``text_projection``, ``visual.proj``, ...) are dropped later by the splitter.
    """
    from toonctl.convert.tooncrafter import IMAGE_EMBEDDER_PREFIX, TEXT_PREFIX

    keys = list(keys)
    official = {k: k for k in keys if k.startswith((TEXT_PREFIX, IMAGE_EMBEDDER_PREFIX))}
    if official:
        return official
    if "visual.conv1.weight" in keys and "token_embedding.weight" in keys:
        # attn_mask is a computed causal mask (a non-persistent buffer in open_clip), never a weight.
        weights_only = [k for k in keys if k != "attn_mask"]
        return {(IMAGE_EMBEDDER_PREFIX if k.startswith("visual.") else TEXT_PREFIX) + k: k for k in weights_only}
    if any(k.startswith(("text_model.", "vision_model.")) for k in keys):
        raise CheckpointError(
            f"{path} is a transformers CLIPModel file, not the open_clip layout",
            hint="use open_clip_pytorch_model.bin or open_clip_model.safetensors from the same repository",
        )
    raise CheckpointError(
        f"{path} is not an OpenCLIP checkpoint (no visual.conv1.weight / token_embedding.weight) "
        "nor an official ToonCrafter model.ckpt"
    )


def default_name(path: Path, config: ToonCrafterConfig, dtype_label: str) -> str:
    """``tooncrafter-512-fp16`` for the released architecture, else ``<file stem>-<dtype>``."""
    from toonctl.models.configs import ToonCrafterConfig

    stem = "tooncrafter-512" if config == ToonCrafterConfig() else Path(path).stem
    return f"{stem}-{dtype_label}"


def import_checkpoint(
    path: str | Path,
    dest: str | Path | None = None,
    *,
    clip: str | Path | None = None,
    dtype: str = "fp16",
    name: str | None = None,
    config: str | Path | ToonCrafterConfig | None = None,
    overwrite: bool = False,
    progress: ComponentProgress | None = None,
) -> Path:
    """Convert a local checkpoint into ``dest/<name>/`` (a converted directory, ``save_components``).

    Args:
        path: the official ``model.ckpt``, an official-layout ``.safetensors``, or a pruned file without the
            CLIP towers (kijai's ``tooncrafter_512_interp-pruned-fp16.safetensors``).
        dest: the weights folder (default ``weights_dir()``).
        clip: where to take the CLIP towers from when ``path`` lacks them: an OpenCLIP ViT-H-14 checkpoint
            (open_clip layout) or an official ``model.ckpt``. Ignored for complete checkpoints.
        dtype: ``fp16``, ``bf16`` or ``fp32`` for the network weights.
        name: the directory name (default ``default_name``).
        config: the architecture (default: ``config_for(path)``).
        overwrite: replace an existing converted directory of that name.
        progress: called before each component is written.

    Returns:
        The converted directory.
    """
    from toonctl.convert.components import is_converted_dir, save_components
    from toonctl.convert.tooncrafter import read_state_dict

    path = Path(path)
    if is_converted_dir(path):
        raise CheckpointError(f"{path} is already a converted model", hint="use it directly: --weights PATH")
    torch_dtype = _torch_dtype(dtype)
    dest = Path(dest) if dest is not None else weights_dir()
    if name is not None:
        check_model_name(name)
    check_dest(dest)  # before reading gigabytes: the folder can take the result
    config = config_for(path, config)
    state_dict = read_state_dict(path)
    if checkpoint_layout(state_dict) == "pruned":
        if clip is None:
            raise CheckpointError(MISSING_CLIP.format(path=path), hint=f"toonctl weights import {path} --clip PATH")
        source = _KeyView()
        source.add(state_dict, {k: k for k in state_dict})
        clip_dict = read_state_dict(clip)
        source.add(clip_dict, clip_renames(clip_dict, Path(clip)))
        state_dict = source
    out = dest / (name or default_name(path, config, _dtype_label(dtype)))
    return save_components(state_dict, config, out, dtype=torch_dtype, overwrite=overwrite, progress=progress)


def check_model_name(name: str) -> None:
    """A converted model's name is one plain folder name: no path separators, not ``.``/``..``, not hidden.

    Raises:
        UsageError: otherwise (``--name ../../x`` or an absolute name would write outside the weights folder).
    """
    if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith(".") or "\0" in name:
        raise UsageError(
            f"invalid model name {name!r}: give a plain folder name (no /, not starting with a dot)",
            hint="the converted model is created inside --dest; choose the folder with --dest",
        )


def check_dest(dest: Path) -> None:
    """``dest`` is a folder that takes new files, or does not exist yet (it will be created)."""
    from toonctl.io.atomic import check_writable

    if dest.exists() and not dest.is_dir():
        raise OutputError(f"cannot write into {dest}: it is a file, not a folder", hint="--dest takes a folder")
    if dest.is_dir():
        check_writable(dest / "model", folder=dest)


def _dtype_label(dtype: str) -> str:
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return dtype


def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    return getattr(torch, DTYPE_CHOICES[_dtype_label(dtype)])


# -- list ----------------------------------------------------------------------------------------------


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


# -- verify --------------------------------------------------------------------------------------------


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
    from toonctl.convert.tooncrafter import strip_shared_prefix
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


# -- resolve -------------------------------------------------------------------------------------------


def config_for(path: str | Path, config: str | Path | ToonCrafterConfig | None = None) -> ToonCrafterConfig:
    """The architecture of the weights at ``path``.

    In order: ``config`` when given (an official yaml or our ``config.json``); a converted directory's own
    ``config.json``; a ``config.yaml`` / ``config.json`` next to a checkpoint file; the released 512 model.
    """
    from toonctl.config import load_config
    from toonctl.convert.components import is_converted_dir, read_converted_config
    from toonctl.models.configs import ToonCrafterConfig

    if isinstance(config, ToonCrafterConfig):
        return config
    if config is not None:
        return load_config(config)
    path = Path(path)
    if is_converted_dir(path):
        return read_converted_config(path)
    for sibling in ("config.yaml", "config.json"):
        if (path.parent / sibling).is_file():
            return load_config(path.parent / sibling)
    return ToonCrafterConfig()


def load_weights(
    path: str | Path,
    config: str | Path | ToonCrafterConfig | None = None,
    *,
    components: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, object]:
    """Load a checkpoint file or a converted directory (what ``resolve_weights`` returns) into our modules.

    Returns ``load_components``' shape: ``{name: module}`` plus ``"schedule"``. ``dtype`` None keeps a
    converted directory's stored dtype and loads a checkpoint file in float32.
    """
    import torch

    from toonctl.convert.components import is_converted_dir, load_converted, read_converted_config
    from toonctl.convert.tooncrafter import load_components
    from toonctl.errors import ConfigError

    path = Path(path)
    config = config_for(path, config)
    if is_converted_dir(path):
        if config != read_converted_config(path):
            raise ConfigError(f"the config given differs from {path / 'config.json'}", hint="leave out --config")
        return load_converted(path, components=components, device=device, dtype=dtype)
    return load_components(path, config, components=components, device=device, dtype=dtype or torch.float32)


def find_weights(folder: Path) -> tuple[Path | None, list[str]]:
    """The model a weights folder offers: the first complete converted directory (by name), else
    ``model.ckpt``, else ``model.safetensors``. Returns ``(path or None, the places looked at)``."""
    from toonctl.convert.components import is_converted_dir, missing_files

    looked = [f"{folder}/<name>/ (converted models)", str(folder / "model.ckpt"), str(folder / "model.safetensors")]
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            if is_converted_dir(sub) and not missing_files(sub):
                return sub, looked
    for name in ("model.ckpt", "model.safetensors"):
        if (folder / name).is_file():
            return folder / name, looked
    return None, looked


def resolve_weights(
    weights: str | Path | None = None, config: str | Path | None = None
) -> tuple[Path, ToonCrafterConfig]:
    """Find the model to run and its architecture (what the CLI's ``--weights``/``--config`` resolve to).

    ``weights``: a checkpoint file, a converted directory, or a folder to search like the weights folder.
    Without it, the weights folder (``$TOONCTL_WEIGHTS`` or ``weights/``) is searched (``find_weights``).
    The config comes from ``config_for``.

    Raises:
        WeightsNotFoundError: nothing found; the message lists every place looked at.
    """
    from toonctl.convert.components import is_converted_dir

    if weights is not None:
        weights = Path(weights)
        if weights.is_file():
            return weights, _checked_file_config(weights, config)
        if is_converted_dir(weights):
            return weights, config_for(weights, config)
        if not weights.is_dir():
            raise WeightsNotFoundError(f"--weights {weights} does not exist")
        folder, origin = weights, f"--weights {weights}"
    else:
        folder = weights_dir()
        origin = f"${WEIGHTS_ENV}" if os.environ.get(WEIGHTS_ENV) else "the default weights folder"
    found, looked = find_weights(folder)
    if found is None and (folder / "config.json").is_file():
        from toonctl.convert.components import read_converted_config

        read_converted_config(folder)  # a converted model with a broken config.json: say what is wrong with it
    if found is None:
        skipped = _broken_converted(folder)
        places = "\n".join([*(f"  {p}" for p in looked), *(f"  skipped {p}" for p in skipped)])
        raise WeightsNotFoundError(
            f"no model weights found in {folder} ({origin}); looked for:\n{places}",
            hint=f"run `toonctl weights fetch --dest {folder}` (downloads {HF_REPO} model.ckpt, 10.5 GB), "
            "`toonctl weights import FILE`, or pass --weights PATH",
        )
    return found, (_checked_file_config(found, config) if found.is_file() else config_for(found, config))


def _broken_converted(folder: Path) -> list[str]:
    """Sub-folders of ``folder`` with a ``config.json`` that cannot be read as a converted model's, and why."""
    from toonctl.convert.components import read_converted_config

    broken = []
    for sub in sorted(folder.iterdir()) if folder.is_dir() else ():
        if (sub / "config.json").is_file():
            try:
                read_converted_config(sub)
            except ToonctlError as exc:
                broken.append(f"{sub}: {exc}")
    return broken


_NOT_CHECKPOINTS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF file (WebP/AVI/WAV)",
}


def _checked_file_config(path: Path, config: str | Path | None) -> ToonCrafterConfig:
    """``config_for(path, config)`` after two cheap checks, so that a wrong file is named as such before any
    input is checked against an architecture it does not have.

    * the file is not an image (``--weights key.png``);
    * without a config (none given, none beside the file), a safetensors file's UNet input convolution must
      have the released model's shape: a tiny or custom model without its config is refused here, not later
      with a size error computed from the wrong architecture.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, what in _NOT_CHECKPOINTS.items():
        if head.startswith(magic):
            raise CheckpointError(
                f"{path} is not a checkpoint: it is {what}",
                hint="--weights takes a model.ckpt, a .safetensors file or a converted folder",
            )
    is_safetensors = len(head) >= 9 and head[8:9] == b"{"  # other unknown bytes: the loader names the problem
    resolved = config_for(path, config)
    sibling = any((path.parent / name).is_file() for name in ("config.yaml", "config.json"))
    if config is None and not sibling and is_safetensors:
        shape = _safetensors_shape(path, "model.diffusion_model.input_blocks.0.0.weight")
        expected = resolved.unet.model_channels
        if shape is not None and shape[0] != expected:
            raise ConfigError(
                f"{path} is not the released ToonCrafter-512 architecture (its UNet has {shape[0]} base channels,"
                f" the 512 model {expected}) and no config.yaml is beside it",
                hint="pass --config with the model's config.yaml, or put it next to the checkpoint",
            )
    return resolved


def _safetensors_shape(path: Path, key: str) -> list[int] | None:
    """The shape of ``key`` from a safetensors header (None if absent or unreadable)."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > 100_000_000:
                return None
            header = json.loads(f.read(header_len))
        return list(header[key]["shape"]) if key in header else None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
