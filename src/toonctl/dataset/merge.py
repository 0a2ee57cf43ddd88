"""``toonctl dataset merge``: join datasets built apart (``--shard I/N`` on several machines) into one.

Each source folder's parts, samples and clip folders are brought into the output (hard links when the
folders share a file system, else copies), then the manifest, scores and report are rewritten from all
of them, exactly as a single build would have written them. An episode finished in two sources is taken
from the first; the sources must have been built with the same settings.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from toonctl.dataset import store
from toonctl.dataset.build import finalize, read_scoring, write_build_file
from toonctl.dataset.scoring import scores_path
from toonctl.dataset.settings import read_settings
from toonctl.errors import DataError


def merge_datasets(
    sources: list[Path], root: Path, *, on_warning: Callable[[str], None] | None = None, force: bool = False
) -> dict:
    """Merge ``sources`` into ``root``; return the merged dataset's summary.

    Raises:
        DataError: a source that is not a dataset folder, or sources built with other settings
            (unless ``force``).
    """
    warn = on_warning or (lambda message: None)
    settings = None
    for source in sources:
        theirs = read_settings(source / store.BUILD_FILE)
        if theirs is None:
            raise DataError(
                f"{source} is not a dataset folder (no {store.BUILD_FILE})",
                hint="give folders written by `toonctl dataset build`",
            )
        if settings is None:
            settings = theirs
        elif theirs != settings and not force:
            raise DataError(
                f"{source} was built with other settings than {sources[0]}"
                f" ({'; '.join(settings.differences(theirs))})",
                hint="pass --force to merge anyway",
            )
    mine = read_settings(root / store.BUILD_FILE)
    if mine is not None and mine != settings and not force:
        raise DataError(f"{root} was built with other settings", hint="merge into a new folder, or pass --force")
    (root / store.PARTS).mkdir(parents=True, exist_ok=True)
    write_build_file(root, settings, read_scoring(sources[0]))
    taken: dict[str, Path] = {p["episode"]: root for p in store.iter_parts(root)}
    for source in sources:
        if source.resolve() == root.resolve():
            continue
        for part in store.iter_parts(source):
            key = part["episode"]
            if key in taken:
                if taken[key] != root:
                    warn(f"episode {part['name']} is in {taken[key]} and {source}: keeping the first")
                continue
            taken[key] = source
            _bring(source / store.CLIPS / key, root / store.CLIPS / key)
            _bring(store.samples_path(source, key), store.samples_path(root, key))
            _bring(scores_path(source, key), scores_path(root, key))
            _bring(store.part_path(source, key), store.part_path(root, key))  # last: marks the episode done
            store.failed_path(root, key).unlink(missing_ok=True)
        for failure in store.iter_failures(source):
            if failure["episode"] not in taken:
                store.write_json(store.failed_path(root, failure["episode"]), failure)
    return finalize(root)


def _bring(source: Path, target: Path) -> None:
    """Hard-link (else copy) a file or a folder's files to ``target``, replacing what is there."""
    if not source.exists():
        return
    partial = target.with_name(f".{target.name}.partial")
    store.remove_tree(partial)
    if source.is_dir():
        shutil.copytree(source, partial, copy_function=_link_or_copy)
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source, partial)
    store.remove_tree(target)
    os.replace(partial, target)


def _link_or_copy(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
