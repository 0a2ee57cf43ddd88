"""Optional CLIP scores of the clips, with the ViT-H-14 towers ToonCrafter's own checkpoint carries
(``toonctl.models.clip_scoring.CLIPScorer``; nothing is downloaded). The paper (§3.2) drops
low-aesthetic clips (LAION's regressor) and clips whose caption does not match (CLIP on the first,
middle and last frame); it gives no thresholds, so by default the scores are recorded, not used.

* ``alignment``: the mean, over a clip's first, middle and last frame, of the cosine between the
  frame's and the caption's CLIP embeddings (clips without a caption get none); ``alignment_min``: the
  lowest of the three.
* ``aesthetic``: a linear head the user supplies over the L2-normalised image embedding, averaged over
  the same three frames: ``score = embedding @ weight + bias``. The head file is a ``.safetensors``
  (or a ``.pt``/``.pth`` read with ``weights_only``) holding ``weight`` of shape ``(D,)`` or ``(1, D)``
  and ``bias`` of shape ``()`` or ``(1,)``, D = the embedding size (1024 for ViT-H-14); a single
  ``nn.Linear(D, 1)`` state dict, possibly under a prefix (``layers.0.weight``), is accepted too. That is
  the layout of LAION's linear aesthetic predictors; the scale of the score is the head's.

The frames scored are the samples each episode stored (``parts/<episode>.samples.npz``, 256 px wide),
squash-resized to the tower's 224x224 as ToonCrafter's image embedder does. Scores are cached per
episode in ``parts/<episode>.scores.json`` (keyed by caption and head), so a re-run scores only new
clips, and ``finalize`` applies the thresholds, which may change between runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from toonctl.dataset import store
from toonctl.errors import DataError


@dataclass(frozen=True)
class ScoreSettings:
    """What to score and how to filter. ``weights``: the checkpoint with the CLIP towers (None: no scores
    are computed, but cached ones are still applied); ``aesthetic_head``: the head file (see the module
    docstring); ``min_*``: drop clips scoring under it (None: record only)."""

    weights: str | None = None
    config: str | None = None
    aesthetic_head: str | None = None
    min_alignment: float | None = None
    min_aesthetic: float | None = None
    device: str = "auto"

    def to_json(self) -> dict:
        return asdict(self)


def scores_path(root: Path, key: str) -> Path:
    return root / store.PARTS / f"{key}{store.SCORES_SUFFIX}"


def load_head(path: str | Path) -> tuple[np.ndarray, float, str]:
    """``(weight (D,), bias, digest)`` of an aesthetic head file (see the module docstring).

    Raises:
        DataError: unreadable file, or not one linear layer to a single output.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(path)
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many types on bad files
        raise DataError(f"cannot read the aesthetic head {path}: {exc}") from None
    if not isinstance(tensors, dict):
        raise DataError(f"aesthetic head {path}: expected a dict of tensors, got {type(tensors).__name__}")
    weights = [k for k in tensors if k == "weight" or k.endswith(".weight")]
    biases = [k for k in tensors if k == "bias" or k.endswith(".bias")]
    if len(weights) != 1 or len(biases) != 1:
        raise DataError(
            f"aesthetic head {path}: expected one weight and one bias tensor, found {sorted(tensors)}",
            hint="a linear head: weight (D,) or (1, D), bias () or (1,)",
        )
    weight, bias = tensors[weights[0]].float(), tensors[biases[0]].float()
    if weight.dim() == 2 and weight.shape[0] == 1:
        weight = weight[0]
    if weight.dim() != 1 or bias.numel() != 1:
        raise DataError(
            f"aesthetic head {path}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} are not a linear"
            " layer to one score",
            hint="weight (D,) or (1, D), bias () or (1,)",
        )
    digest = hashlib.sha1(weight.numpy().tobytes() + bias.numpy().tobytes()).hexdigest()[:12]
    return weight.numpy(), float(bias.reshape(())), digest


class ClipScoring:
    """Computes missing scores of the clips of ``parts`` (loading the CLIP towers only if needed)."""

    def __init__(self, settings: ScoreSettings) -> None:
        self.settings = settings
        self.head = load_head(settings.aesthetic_head) if settings.aesthetic_head else None
        self._scorer = None
        self.weights = Path(settings.weights or "")
        self.on_progress: Callable[[int, int, str], None] | None = None

    def check(self) -> None:
        """Raise ``DataError`` now if the checkpoint is missing (the towers load only when needed)."""
        if not self.weights.is_file():
            raise DataError(
                f"--weights {self.weights} is not a checkpoint file",
                hint="give model.ckpt (the CLIP towers scoring needs are only in the full checkpoint)",
            )

    @property
    def scorer(self):
        if self._scorer is None:
            from toonctl.device import resolve_device
            from toonctl.models.clip_scoring import CLIPScorer
            from toonctl.weights import config_for

            self.check()
            config = config_for(self.weights, self.settings.config)
            try:
                device = resolve_device(self.settings.device)
            except ValueError as exc:
                raise DataError(str(exc)) from None
            self._scorer = CLIPScorer.from_checkpoint(self.weights, config, device=device)
        return self._scorer

    def __call__(self, root: Path, parts: list[dict]) -> None:
        """Score the kept clips of every part that lack a score; write each episode's cache.

        ``self.on_progress(done, total, episode name)`` (when set) is called after each episode that needed
        scores.
        """
        todo = [part for part in parts if self._todo(root, part)]
        for done, part in enumerate(todo, start=1):
            self.score_part(root, part)
            if self.on_progress:
                self.on_progress(done, len(todo), part["name"])

    def _todo(self, root: Path, part: dict) -> list[dict]:
        """The kept clips of ``part`` whose scores are missing or stale."""
        path = scores_path(root, part["episode"])
        cache = store.read_json(path) if path.is_file() else {}
        return [c for c in part["clips"] if c["status"] == "kept" and self._missing(cache.get(c["clip"], {}), c)]

    def score_part(self, root: Path, part: dict) -> None:
        path = scores_path(root, part["episode"])
        cache = store.read_json(path) if path.is_file() else {}
        todo = [c for c in part["clips"] if c["status"] == "kept" and self._missing(cache.get(c["clip"], {}), c)]
        if not todo:
            return
        samples = store.read_samples(root, part["episode"])
        todo = [c for c in todo if c["clip"] in samples]
        if not todo:
            return
        import torch

        frames = np.concatenate([samples[c["clip"]] for c in todo])  # (3 N, H, W, 3) uint8
        images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # (3 N, 3, H, W) in [-1, 1]
        embeddings = self.scorer.embed_images(images).numpy().reshape(len(todo), 3, -1)  # (N, 3, D)
        captions = sorted({c["caption"] for c in todo if c["caption"]})
        text = dict(zip(captions, self.scorer.embed_texts(captions).numpy(), strict=True)) if captions else {}
        for clip, embedding in zip(todo, embeddings, strict=True):
            entry = cache.setdefault(clip["clip"], {})
            if clip["caption"]:
                cosines = embedding @ text[clip["caption"]]  # (3,)
                entry.update(alignment=float(cosines.mean()), alignment_min=float(cosines.min()),
                             alignment_caption=clip["caption"])  # fmt: skip
            if self.head is not None:
                weight, bias, digest = self.head
                if weight.shape[0] != embedding.shape[1]:
                    raise DataError(
                        f"the aesthetic head takes {weight.shape[0]}-d embeddings, the CLIP tower gives"
                        f" {embedding.shape[1]}-d ones",
                        hint="use a head trained on this CLIP model's image embeddings (ViT-H-14: 1024)",
                    )
                entry.update(aesthetic=float((embedding @ weight + bias).mean()), aesthetic_head=digest)
        store.write_json(path, cache)

    def _missing(self, cached: dict, clip: dict) -> bool:
        if clip["caption"] and cached.get("alignment_caption") != clip["caption"]:
            return True
        return self.head is not None and cached.get("aesthetic_head") != self.head[2]


def apply_scores(root: Path, parts: list[dict], settings: ScoreSettings | None) -> dict:
    """Attach each episode's cached scores to its clips, drop clips under the thresholds; what was done.

    Returns:
        ``{"computed": [...], "alignment_filter": ..., "aesthetic_filter": ..., "histograms": {...}}`` for the
        report.
    """
    settings = settings or ScoreSettings()
    found: set[str] = set()
    for part in parts:
        path = scores_path(root, part["episode"])
        cache = store.read_json(path) if path.is_file() else {}
        for clip in part["clips"]:
            cached = cache.get(clip["clip"], {})
            scores = {}
            if "alignment" in cached and cached.get("alignment_caption") == clip["caption"]:
                scores.update(alignment=round(cached["alignment"], 4), alignment_min=round(cached["alignment_min"], 4))
            if "aesthetic" in cached:
                scores["aesthetic"] = round(cached["aesthetic"], 4)
            clip["scores"] = scores
            found.update(scores)
            if clip["status"] != "kept":
                continue
            for name, threshold in (("alignment", settings.min_alignment), ("aesthetic", settings.min_aesthetic)):
                if threshold is not None and name in scores and scores[name] < threshold:
                    clip["status"], clip["dropped_by"] = "dropped", name
                    break
    computed = [name for name in ("alignment", "aesthetic") if name in found]
    info: dict = {"computed": computed, "histograms": {}}
    for name, threshold in (("alignment", settings.min_alignment), ("aesthetic", settings.min_aesthetic)):
        if name in computed:
            info["histograms"][name] = {"threshold": threshold}
            info[f"{name}_filter"] = (
                f"drops {name} < {threshold:g}" if threshold is not None else "scored, no threshold"
            )
        else:
            info[f"{name}_filter"] = "off (not scored)"
    return info
