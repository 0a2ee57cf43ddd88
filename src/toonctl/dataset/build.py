"""``toonctl dataset build``: episodes -> clips, in parallel, resumably, one shard of many if asked.

Each episode is one job (``episode.process_episode``) run by a pool of worker processes; finished
episodes (those with a part in ``DATASET/parts``) are skipped, so a re-run after a crash or a kill
redoes only the episode that was in flight. ``--shard I/N`` takes every N-th episode of the sorted
list; ``merge`` joins the shards' folders. At the end the manifest, the scores and the report are
rewritten from every part in the folder (``finalize``).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from toonctl.dataset import deps, report, store
from toonctl.dataset.captions import Captions
from toonctl.dataset.episode import process_episode
from toonctl.dataset.scoring import ClipScoring, ScoreSettings, apply_scores
from toonctl.dataset.settings import BuildSettings, read_settings
from toonctl.dataset.sources import Episode, find_episodes, shard
from toonctl.dataset.text import check_detector
from toonctl.errors import DataError, ToonctlError


@dataclass
class Progress:
    """Where a build stands, passed to the progress callback after each episode (``stage`` "episodes") and,
    when scores are computed, after each episode scored (``stage`` "scores")."""

    done: int
    total: int
    name: str
    ok: bool
    eta_seconds: float | None
    stage: str = "episodes"


def _eta(began: float, done: int, total: int) -> float | None:
    return (time.monotonic() - began) / done * (total - done) if done else None


@dataclass
class BuildResult:
    summary: dict
    processed: int = 0
    resumed: int = 0
    failed: list[dict] = field(default_factory=list)


def build_dataset(
    inputs: list[Path],
    root: Path,
    settings: BuildSettings,
    *,
    workers: int = 1,
    shard_index: int = 0,
    shard_count: int = 1,
    force: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    scoring: ScoreSettings | None = None,
) -> BuildResult:
    """Build (or resume) the dataset in ``root`` from the episodes under ``inputs``.

    Args:
        workers: worker processes (1: in this process).
        shard_index, shard_count: this run's share of the sorted episodes.
        force: redo finished episodes (and accept settings other than ``build.json``'s).
        on_progress: called after each episode of this run.
        on_failure: called with ``(episode name, reason)`` for each episode that cannot be used.
        scoring: CLIP scores to compute (when it names ``weights``) and thresholds to apply (see
            ``scoring``); None: no scores.

    Raises:
        DataError: no episode, bad captions file, a folder built with other settings.
        MissingExtraError: OpenCV or PySceneDetect is not installed.
    """
    deps.check_installed()
    scoring = scoring or ScoreSettings()
    scorer = ClipScoring(scoring) if scoring.weights else None  # reads the head file now: fail before any work
    if scorer is not None:
        scorer.check()
        if on_progress:
            scoring_began = time.monotonic()
            scorer.on_progress = lambda done, total, name: on_progress(
                Progress(done, total, name, True, _eta(scoring_began, done, total), stage="scores")
            )
    if settings.text_detector:
        check_detector(settings.text_detector)
    captions = Captions.load(settings.prompt, settings.captions_csv)
    episodes = shard(find_episodes(inputs, exclude=root), shard_index, shard_count)
    _claim(root, settings, scoring, force)
    todo = [e for e in episodes if force or not store.part_path(root, e.key).is_file()]
    result = BuildResult(summary={}, resumed=len(episodes) - len(todo))
    began = time.monotonic()

    def record(episode: Episode, error: str | None) -> None:
        if error is None:
            result.processed += 1
        else:
            result.failed.append({"name": episode.name, "error": error})
            store.write_json(
                store.failed_path(root, episode.key), {"episode": episode.key, "name": episode.name, "error": error}
            )
            if on_failure:
                on_failure(episode.name, error)
        if on_progress:
            done = result.processed + len(result.failed)
            on_progress(Progress(done, len(todo), episode.name, error is None, _eta(began, done, len(todo))))

    if workers <= 1 or len(todo) <= 1:
        for episode in todo:
            record(episode, _run_one(episode, root, settings, captions))
    else:
        _run_pool(todo, root, settings, captions, workers, record)
    result.summary = finalize(root, scorer=scorer)
    return result


def _claim(root: Path, settings: BuildSettings, scoring: ScoreSettings, force: bool) -> None:
    """Create ``root`` and store the settings; refuse a folder built with other ones (unless ``force``)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / store.PARTS).mkdir(exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the dataset folder {root}: {exc.strerror or exc}") from None
    previous = read_settings(root / store.BUILD_FILE)
    if previous is not None and previous != settings and not force:
        changes = "; ".join(settings.differences(previous))
        raise DataError(
            f"{root} was built with other settings ({changes})",
            hint="use the same options to resume, another -o for a new dataset, or --force to rebuild",
        )
    write_build_file(root, settings, scoring)


def write_build_file(root: Path, settings: BuildSettings, scoring: ScoreSettings) -> None:
    store.write_json(
        root / store.BUILD_FILE, {"version": 1, "settings": settings.to_json(), "scoring": scoring.to_json()}
    )


def read_scoring(root: Path) -> ScoreSettings:
    """The score settings of the last build in ``root`` (none: no thresholds)."""
    path = root / store.BUILD_FILE
    data = store.read_json(path).get("scoring") if path.is_file() else None
    return ScoreSettings(**data) if data else ScoreSettings()


def _run_one(episode: Episode, root: Path, settings: BuildSettings, captions: Captions) -> str | None:
    """Process one episode; None when done, else the reason it failed (it is skipped)."""
    try:
        process_episode(episode, root, settings, captions)
    except ToonctlError as exc:
        return str(exc)
    return None


def _worker_init() -> None:
    deps.cv2().setNumThreads(1)  # one episode per core: no nested OpenCV threads


def _run_pool(todo, root, settings, captions, workers, record) -> None:
    context = multiprocessing.get_context("spawn")  # no fork under the progress thread
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)
    try:
        pending = {executor.submit(_run_one, e, root, settings, captions): e for e in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                episode = pending.pop(future)
                record(episode, future.result())
    except BaseException:  # Ctrl-C or a crash: stop the workers now (their episodes stay unfinished)
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
        executor.shutdown(wait=True)
        raise
    executor.shutdown()


def finalize(root: Path, scorer: ClipScoring | None = None) -> dict:
    """Write ``manifest.csv``, ``scores.jsonl`` and the report from every part under ``root``; the summary.

    ``scorer`` computes the scores still missing first; the cached scores and the thresholds of
    ``build.json`` are applied either way.
    """
    settings = read_settings(root / store.BUILD_FILE) or BuildSettings()
    parts = list(store.iter_parts(root))
    failures = [f for f in store.iter_failures(root) if not store.part_path(root, f["episode"]).is_file()]
    if scorer is not None:
        scorer(root, parts)
    score_info = apply_scores(root, parts, read_scoring(root))
    store.write_outputs(root, parts)
    summary = report.summarize(root, parts, failures, settings, score_info)
    report.write_report(root, parts, summary, settings)
    return summary
