"""The dataset's report: what each filter dropped, the distributions, and sample clips.

``summarize`` counts from the parts (so a resumed, sharded or merged dataset reports on all its
episodes); ``write_report`` writes ``DATASET/report/``: ``summary.json``, ``README.md`` (the same as
tables), histograms (``flow.png`` with the static threshold, ``duplicate_rate.png``, ``drawing_rate.png``,
``text.png`` and one per score when computed) and two contact sheets (``contact_sheet.png``: kept clips;
``dropped.png``: dropped ones, labelled with the filter), each clip as its first, middle and last frame.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from toonctl.dataset import plots, store
from toonctl.dataset.settings import BuildSettings

FILTERS = ("short", "static", "text", "alignment", "aesthetic")
SHEET_CLIPS = 12


def summarize(root: Path, parts: list[dict], failures: list[dict], settings: BuildSettings, score_info: dict) -> dict:
    """Counts and settings of the whole dataset (every part under ``root``)."""
    clips = [clip for part in parts for clip in part["clips"]]
    kept = [clip for clip in clips if clip["status"] == "kept"]
    fps = {part["episode"]: part["fps"] for part in parts}
    kept_seconds = sum(
        clip["frames"] / fps[part["episode"]] for part in parts for clip in part["clips"] if clip["status"] == "kept"
    )
    flows = [clip["flow"] for clip in clips if clip.get("flow") is not None]
    dropped = Counter(clip["dropped_by"] for clip in clips if clip["dropped_by"])
    return {
        "dataset": str(root),
        "episodes": len(parts),
        "failed_episodes": len(failures),
        "failures": [{"name": f.get("name"), "error": f.get("error")} for f in failures],
        "source_seconds": round(sum(part["frames"] / part["fps"] for part in parts), 2),
        "shots": sum(len(part["shots"]) for part in parts),
        "clips": len(clips),
        "dropped": {name: dropped.get(name, 0) for name in FILTERS},
        "kept": len(kept),
        "kept_seconds": round(kept_seconds, 2),
        "drawing_rates": {str(k): v for k, v in sorted(Counter(c["drawing_rate"] for c in kept).items())},
        "captions": dict(Counter(clip["caption_source"] for clip in kept)),
        "filters": _filters(settings, score_info),
        "static_threshold_effect": _threshold_effect(flows, settings.min_flow),
        "scores": score_info,
    }


def _filters(settings: BuildSettings, score_info: dict) -> dict:
    text = (
        f"on: {settings.text_detector}, drops text fraction > {settings.max_text:g}"
        if settings.text_detector
        else "off (no detector given: pass --text-detector heuristic or a command)"
    )
    return {
        "shots": f"PySceneDetect ContentDetector, threshold {settings.cut_threshold:g}",
        "short": f"shots under {settings.min_shot:g} s or {settings.min_frames} frames; shots over"
        f" {settings.max_shot:g} s cut into"
        f" {settings.clip_length:g} s clips",
        "static": f"mean optical flow < {settings.min_flow:g} px/frame (at 256 px width)"
        if settings.min_flow > 0
        else "off",
        "text": text,
        "alignment": score_info.get("alignment_filter", "off"),
        "aesthetic": score_info.get("aesthetic_filter", "off"),
    }


def _threshold_effect(flows: list[float], threshold: float) -> dict:
    """How many clips each nearby static threshold would drop (half, the one used, double)."""
    base = threshold if threshold > 0 else 0.25
    return {f"{t:g}": int(sum(f < t for f in flows)) for t in (base / 2, base, base * 2)}


def write_report(root: Path, parts: list[dict], summary: dict, settings: BuildSettings) -> Path:
    """Write ``root/report/`` (see the module docstring); returns the folder."""
    folder = root / store.REPORT
    folder.mkdir(parents=True, exist_ok=True)
    analysed = store.analysed_clips(parts)
    kept = [c for c in analysed if c["status"] == "kept"]
    plots.histogram(
        [c["flow"] for c in analysed],
        folder / "flow.png",
        "mean optical flow (px/frame at 256 px)",
        threshold=settings.min_flow if settings.min_flow > 0 else None,
    )
    plots.histogram(
        [c["duplicate_rate"] for c in analysed], folder / "duplicate_rate.png", "duplicate rate (held frames / frames)"
    )
    plots.histogram(
        [c["drawing_rate"] for c in kept],
        folder / "drawing_rate.png",
        "drawing rate of kept clips (frames per drawing)",
        integer=True,
    )
    if settings.text_detector:
        plots.histogram(
            [c["text"] for c in analysed],
            folder / "text.png",
            "text fraction",
            threshold=settings.max_text,
            drop_below=False,
        )
    for name, info in (summary.get("scores") or {}).get("histograms", {}).items():
        plots.histogram(
            [(c.get("scores") or {}).get(name) for c in analysed],
            folder / f"{name}.png",
            name,
            threshold=info.get("threshold"),
        )
    _sheets(root, parts, folder)
    store.write_json(folder / "summary.json", summary)
    store.write_text_atomic(folder / "README.md", markdown(summary))
    return folder


def _sheets(root: Path, parts: list[dict], folder: Path) -> None:
    """The two contact sheets; only the episodes of the clips shown have their samples read."""
    analysed = [(part, clip) for part in parts for clip in part["clips"] if clip["dropped_by"] != "short"]
    kept = _spread([(p, c) for p, c in analysed if c["status"] == "kept"])
    dropped = _spread([(p, c) for p, c in analysed if c["status"] != "kept"])
    samples: dict[str, dict] = {}
    for part, _ in kept + dropped:
        if part["episode"] not in samples:
            samples[part["episode"]] = store.read_samples(root, part["episode"])

    def rows(chosen: list) -> list:
        out = []
        for part, clip in chosen:
            frames = samples[part["episode"]].get(clip["clip"])
            if frames is None:
                continue
            label = f"{part['name']} #{clip['clip']} | rate {clip['drawing_rate']} | flow {clip['flow']:.2f}"
            out.append((label + (f" | dropped: {clip['dropped_by']}" if clip["dropped_by"] else ""), frames))
        return out

    plots.contact_sheet(rows(kept), folder / "contact_sheet.png")
    plots.contact_sheet(rows(dropped), folder / "dropped.png")


def _spread(rows: list) -> list:
    """At most ``SHEET_CLIPS`` of ``rows``, evenly spread."""
    if len(rows) <= SHEET_CLIPS:
        return rows
    return [rows[i] for i in np.linspace(0, len(rows) - 1, SHEET_CLIPS).round().astype(int)]


def markdown(summary: dict) -> str:
    """The summary as a small Markdown page."""
    lines = [
        "# Dataset report",
        "",
        f"{summary['episodes']} episodes ({summary['source_seconds']:.1f} s), {summary['failed_episodes']} failed;"
        f" {summary['shots']} shots, {summary['clips']} clips, **{summary['kept']} kept**"
        f" ({summary['kept_seconds']:.1f} s).",
        "",
        "| filter | setting | dropped |",
        "|---|---|---|",
    ]
    for name in FILTERS:
        lines.append(f"| {name} | {summary['filters'].get(name, '')} | {summary['dropped'].get(name, 0)} |")
    effect = ", ".join(f"< {t}: {n}" for t, n in summary["static_threshold_effect"].items())
    lines += ["", f"Static threshold effect (clips under each flow threshold): {effect}.", ""]
    lines += [f"Drawing rates of kept clips: {json.dumps(summary['drawing_rates'])}.", ""]
    lines += [f"Caption sources of kept clips: {json.dumps(summary['captions'])}.", ""]
    lines += [f"Scores: {summary['scores'].get('computed') or 'none computed (no --score given)'}.", ""]
    if summary["failures"]:
        lines += ["## Failed episodes", ""] + [f"- {f['name']}: {f['error']}" for f in summary["failures"]] + [""]
    lines += ["Figures: flow.png, duplicate_rate.png, drawing_rate.png, contact_sheet.png, dropped.png.", ""]
    return "\n".join(lines)
