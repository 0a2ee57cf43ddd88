"""What every ``toonctl train`` command shares: the data, run and optimisation options (declared once), and
running an objective with progress, warnings and the result line.

A command is a function taking ``run: TrainRun`` first and its own options after; ``training_command`` adds
the shared options to its signature (Typer reads them from there) and builds the ``TrainRun``::

    @training_command
    def sketch_encoder(run: TrainRun, rank: Annotated[int, typer.Option(...)] = 4) -> None:
        \"\"\"Train the sketch encoder.\"\"\"
        run.start("sketch-encoder", lambda: build_my_objective(run, rank), {"rank": rank})

then one line in ``toonctl.cli.train.COMMANDS``. torch is imported only when a command runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toonctl.cli._errors import handle_errors
from toonctl.cli._output import Output
from toonctl.presets import FIT_MODES

if TYPE_CHECKING:
    from toonctl.training.data import DataSettings
    from toonctl.training.engine import TrainResult, TrainSettings

DATA = "Data"
RUN = "Run"
OPTIM = "Optimisation"
MODEL = "Model"

# fmt: off
COMMON_OPTIONS: list[tuple[str, Any, Any]] = [  # (parameter, annotation, default)
    ("data", Annotated[list[Path], typer.Argument(
        metavar="DATA", show_default=False,
        help="Clips: video files (.mp4 .webm .gif ...), folders of clips or of frames, .csv/.jsonl manifests.")], ...),
    ("output_dir", Annotated[Path, typer.Option(
        "--output-dir", "-o", show_default=False, rich_help_panel=RUN,
        help="The run folder (config.json, checkpoints/, logs/, validation/).")], ...),
    ("resume", Annotated[bool, typer.Option(
        "--resume", rich_help_panel=RUN,
        help="Continue the run in --output-dir from its latest checkpoint (same settings required).")], False),
    ("max_steps", Annotated[int, typer.Option(
        "--max-steps", min=1, rich_help_panel=RUN, help="Optimizer steps of the whole run.")], 50_000),
    ("checkpoint_every", Annotated[int, typer.Option(
        "--checkpoint-every", min=1, rich_help_panel=RUN, help="Save a checkpoint every N steps.")], 500),
    ("keep_checkpoints", Annotated[int, typer.Option(
        "--keep-checkpoints", min=1, rich_help_panel=RUN, help="Keep the newest K checkpoints.")], 3),
    ("validation_every", Annotated[int, typer.Option(
        "--validation-every", min=0, rich_help_panel=RUN,
        help="Interpolate the validation key pairs every N steps into RUN/validation/ (0: never).")], 500),
    ("validation_clips", Annotated[list[Path] | None, typer.Option(
        "--validation-clip", rich_help_panel=RUN, show_default=False,
        help="A clip whose first/last frames are a validation pair (repeatable; keep it out of DATA for a held-out "
        "check). Default: the first DATA clip.")],
     None),
    ("log_every", Annotated[int, typer.Option(
        "--log-every", min=1, rich_help_panel=RUN,
        help="Log loss, lr, grad norm and throughput every N steps (RUN/logs/metrics.csv; TensorBoard too if "
        "installed).")], 10),
    ("size", Annotated[str, typer.Option(
        "--size", metavar="HxW", rich_help_panel=DATA,
        help="Training frame size (multiples of 64 for the 512 model).")],
     "320x512"),
    ("frames", Annotated[int, typer.Option(
        "--frames", min=2, max=64, rich_help_panel=DATA, help="Frames per training clip (the model's 16).")], 16),
    ("stride", Annotated[str, typer.Option(
        "--stride", metavar="MIN:MAX", rich_help_panel=DATA,
        help="Frame stride drawn per clip (official 1:6); the fs condition is source fps // stride.")], "1:6"),
    ("fit", Annotated[str, typer.Option(
        "--fit", rich_help_panel=DATA,
        help=f"Fitting clips of another aspect: {', '.join(FIT_MODES)} (centre-crop, pad on white, squash).")],
     "crop"),
    ("default_fps", Annotated[float, typer.Option(
        "--default-fps", min=1.0, max=240.0, rich_help_panel=DATA,
        help="Frame rate of clips that have none (folders of frames).")], 24.0),
    ("num_workers", Annotated[int, typer.Option(
        "--num-workers", min=0, max=64, rich_help_panel=DATA, help="DataLoader worker processes decoding clips.")],
     2),
    ("batch_size", Annotated[int, typer.Option(
        "--batch-size", min=1, rich_help_panel=OPTIM, help="Clips per GPU (process) per forward pass.")], 1),
    ("effective_batch", Annotated[int, typer.Option(
        "--effective-batch", min=1, rich_help_panel=OPTIM,
        help="Clips per optimizer step over all GPUs, reached by gradient accumulation (official 32).")], 32),
    ("lr", Annotated[float | None, typer.Option(
        "--lr", min=0.0, rich_help_panel=OPTIM, show_default=False,
        help="Learning rate. Default: the objective's (rectify 1e-6, full 1e-5, LoRA 1e-4).")], None),
    ("warmup_steps", Annotated[int, typer.Option(
        "--warmup-steps", min=0, rich_help_panel=OPTIM, help="Linear learning-rate warm-up.")], 0),
    ("weight_decay", Annotated[float, typer.Option(
        "--weight-decay", min=0.0, rich_help_panel=OPTIM, help="AdamW weight decay.")], 0.01),
    ("max_grad_norm", Annotated[float, typer.Option(
        "--max-grad-norm", min=0.0, rich_help_panel=OPTIM, help="Gradient-norm clipping (official 0.5).")], 0.5),
    ("mixed_precision", Annotated[str, typer.Option(
        "--mixed-precision", rich_help_panel=OPTIM,
        help="no, bf16 or fp16 (fp32 weights; fp16 with loss scaling, the official regime).")], "no"),
    ("optimizer", Annotated[str, typer.Option(
        "--optimizer", rich_help_panel=OPTIM,
        help="adamw, or adamw8bit (bitsandbytes, CUDA; falls back to adamw).")], "adamw"),
    ("ema_decay", Annotated[float | None, typer.Option(
        "--ema-decay", min=0.0, max=0.999999, rich_help_panel=OPTIM, show_default=False,
        help="Keep an EMA of the trained weights with this decay (e.g. 0.9999); export uses it.")], None),
    ("gradient_checkpointing", Annotated[bool, typer.Option(
        "--gradient-checkpointing", rich_help_panel=OPTIM,
        help="Recompute activations in the backward pass (much less memory, ~30% slower).")], False),
    ("offload_frozen", Annotated[bool, typer.Option(
        "--offload-frozen", rich_help_panel=OPTIM, help="Keep the frozen VAE and CLIP towers on the CPU.")], False),
    ("seed", Annotated[int, typer.Option(
        "--seed", min=0, rich_help_panel=OPTIM, help="Seed of the data order and every draw.")], 20230211),
    ("cpu", Annotated[bool, typer.Option(
        "--cpu", rich_help_panel=MODEL, help="Train on the CPU even if a GPU is present.")], False),
    ("weights", Annotated[Path | None, typer.Option(
        "--weights", rich_help_panel=MODEL,
        help="The official-layout checkpoint to start from. Default: found in weights/.")], None),
    ("config", Annotated[Path | None, typer.Option(
        "--config", rich_help_panel=MODEL, help="Model config (official yaml or config.json).")], None),
    ("json_out", Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (no progress).")],
     False),
    ("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result.")], False),
]
# fmt: on
COMMON_NAMES = [name for name, _, _ in COMMON_OPTIONS]


@dataclass
class TrainRun:
    """The shared options of a ``toonctl train`` command, and running an objective with them."""

    data: list[Path]
    output_dir: Path
    resume: bool
    max_steps: int
    checkpoint_every: int
    keep_checkpoints: int
    validation_every: int
    validation_clips: list[Path] | None
    log_every: int
    size: str
    frames: int
    stride: str
    fit: str
    default_fps: float
    num_workers: int
    batch_size: int
    effective_batch: int
    lr: float | None
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    mixed_precision: str
    optimizer: str
    ema_decay: float | None
    gradient_checkpointing: bool
    offload_frozen: bool
    seed: int
    cpu: bool
    weights: Path | None
    config: Path | None
    json_out: bool
    quiet: bool

    def __post_init__(self) -> None:
        self.out = Output(json_mode=self.json_out, quiet=self.quiet)

    # -- settings ----------------------------------------------------------------------------------

    def data_settings(self, multiple: int = 8) -> DataSettings:
        """The data settings; a bad ``--size``/``--stride``/``--fit`` is a usage error (exit 2)."""
        from toonctl.io.frames import choose_size
        from toonctl.presets import parse_size
        from toonctl.training.data import DataSettings, parse_stride

        try:
            if self.fit not in FIT_MODES:
                raise ValueError(f"--fit must be one of {', '.join(FIT_MODES)}, got {self.fit!r}")
            size = choose_size([], parse_size(self.size), multiple=multiple)
            return DataSettings(
                size=size, num_frames=self.frames, stride=parse_stride(self.stride), fit=self.fit,
                default_fps=self.default_fps,
            )  # fmt: skip
        except ValueError as exc:  # UnsupportedSizeError is a ValueError too
            raise typer.BadParameter(str(exc)) from None

    def train_settings(self) -> TrainSettings:
        from toonctl.training.engine import MIXED_PRECISION, OPTIMIZERS, TrainSettings

        for name, value, choices in (
            ("--mixed-precision", self.mixed_precision, MIXED_PRECISION),
            ("--optimizer", self.optimizer, OPTIMIZERS),
        ):
            if value not in choices:
                raise typer.BadParameter(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in _TRAIN_FIELDS}
        try:
            return TrainSettings(
                learning_rate=self.lr, validation_every=self.validation_every if self.validation_every else 0,
                **values,
            )  # fmt: skip
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    def find_model(self):
        """``(weights path, ToonCrafterConfig)`` of ``--weights``/``--config`` (cheap: nothing loads)."""
        from toonctl.weights import resolve_weights

        return resolve_weights(self.weights, self.config)

    # -- running -----------------------------------------------------------------------------------

    def start(
        self,
        objective_name: str,
        make_objective: Callable[[], Any],
        objective_settings: dict[str, Any],
        data: DataSettings,
        sample_hook: Callable | None = None,
    ) -> TrainResult:
        """Train; print the result (or, on Ctrl-C, where the checkpoint is, then exit 130)."""
        from toonctl.training.engine import TrainingInterrupted, train

        settings = self.train_settings()
        reporter = ConsoleReporter(self.out)
        try:
            result = train(
                make_objective, self.data, data, settings, objective_name=objective_name,
                objective_settings=objective_settings, resume=self.resume, reporter=reporter,
                sample_hook=sample_hook,
            )  # fmt: skip
        except TrainingInterrupted as stop:
            reporter.finish()
            if stop.checkpoint is not None and stop.main_process:
                self.out.warn(f"stopped; saved {stop.checkpoint} (continue with --resume)")
            raise KeyboardInterrupt from None
        if not result.main_process:  # one result line per run, not per process
            return result
        loss = result.metrics.get("loss")
        shown = f", loss {loss:.4g}" if loss is not None else ""
        skipped = f", {result.skipped_clips} clips skipped" if result.skipped_clips else ""
        self.out.result(
            f"trained {objective_name} to step {result.step} in {result.run_dir}{shown}{skipped}",
            run=str(result.run_dir), step=result.step, checkpoint=str(result.checkpoint),
            loss=loss, skipped_clips=result.skipped_clips, trainable_parameters=result.trainable_parameters,
        )  # fmt: skip
        return result


_TRAIN_FIELDS = {
    "output_dir", "max_steps", "batch_size", "effective_batch", "weight_decay", "max_grad_norm", "warmup_steps",
    "mixed_precision", "optimizer", "ema_decay", "gradient_checkpointing", "offload_frozen", "seed",
    "checkpoint_every", "keep_checkpoints", "log_every", "num_workers", "cpu",
}  # fmt: skip


class ConsoleReporter:
    """The engine's reports on the console: info/warnings on stderr, a Rich progress line with ETA."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self._progress = None
        self._task = None

    def info(self, message: str) -> None:
        self.out.info(message)

    def warn(self, message: str) -> None:
        self.out.warn(message)

    def start(self, total_steps: int, start_step: int) -> None:
        if not self.out.show_progress:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"), console=self.out.err,
        )  # fmt: skip
        self._progress.start()
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, metrics="")

    def step(self, step: int, metrics) -> None:
        from toonctl.training.logging import format_metrics

        if self._progress is not None:
            self._progress.update(self._task, completed=step, metrics=format_metrics(metrics))

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def training_command(function: Callable) -> Callable:
    """Give ``function(run: TrainRun, **own)`` the shared options; the result is a Typer command callback
    (errors handled: one ``Error:`` line, exit 1; Ctrl-C exit 130)."""
    own = list(inspect.signature(function, eval_str=True).parameters.values())[1:]
    common = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, annotation, default in COMMON_OPTIONS
    ]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    required = [p for p in common if p.default is ...]
    parameters = [p.replace(default=inspect.Parameter.empty) for p in required]
    parameters += own + [p for p in common if p.default is not ...]

    @functools.wraps(function)
    def command(**values):
        run = TrainRun(**{name: values.pop(name) for name in COMMON_NAMES})
        return function(run, **values)

    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    del command.__wrapped__
    return handle_errors(command)
