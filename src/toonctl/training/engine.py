"""The training engine: one loop for every objective (UNet rectification/LoRA, sketch encoder, decoder).

An objective (``Objective``) says which modules train, which stay frozen, and what the loss of a batch is;
the engine owns everything around it, on HuggingFace accelerate:

* ``Accelerator`` with mixed precision (``no``/``bf16``/``fp16``) and the launch's distributed setup: DDP under
  ``accelerate launch``/``torchrun``; DeepSpeed ZeRO and FSDP through ``accelerate config``'s own file (the
  engine does not configure them itself);
* AdamW (weight decay 0.01, betas 0.9/0.999, eps 1e-8: ``torch.optim.AdamW``'s defaults, which the official
  trainer uses), or bitsandbytes' 8-bit AdamW on CUDA when asked and installed; linear warm-up, then constant;
  grad-norm clipping (0.5, the official ``gradient_clip_val``); optional EMA of the trained weights;
* gradient accumulation up to the effective batch (32 officially: 2 per GPU x 8 GPUs x 2 accumulated);
* every random draw of a step from generators seeded by (seed, step, slot), where the slot is the index of a
  per-process batch in the optimizer step's global batch: the numbers do not depend on the process count
  for the same global batch, and a resume continues exactly;
* the run folder (``toonctl.training.run``): config snapshot, checkpoints every N steps (accelerate
  ``save_state``; atomic; last K kept), resume, a checkpoint on Ctrl-C before stopping (exit 130 in the CLI);
* metrics (``toonctl.training.logging``), periodic validation (``Objective.validate``), progress callbacks.
"""

from __future__ import annotations

import hashlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toonctl.errors import ToonctlError
from toonctl.training.data import DataSettings, SampleHook, StreamSampler, build_dataset, make_loader
from toonctl.training.ema import EMA, EMA_FILE
from toonctl.training.logging import MetricsLogger, Throughput
from toonctl.training.protocol import BaseObjective, LossResult, Objective  # noqa: F401 (re-exported: the contract)
from toonctl.training.run import RunFolder, checkpoint_name, model_files, read_state

OFFICIAL_SEED = 20230211  # DynamiCrafter's trainer.py default
MIXED_PRECISION = ("no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit")


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TrainSettings:
    """Engine settings (the objective and the data have their own).

    Attributes:
        output_dir: the run folder.
        max_steps: optimizer steps of the whole run (a resume continues up to it).
        batch_size: clips per process per forward pass.
        effective_batch: clips per optimizer step over all processes and accumulated passes (official: 32);
            the accumulation is ``effective_batch // (batch_size * processes)``.
        learning_rate: None: the objective's ``default_learning_rate``.
        warmup_steps: linear warm-up from 0 to the learning rate (then constant).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (fp16 with a loss scaler; weights stay fp32).
        optimizer: ``adamw``, or ``adamw8bit`` (bitsandbytes, CUDA only; falls back to adamw with a warning).
        ema_decay: keep an exponential moving average of the trained weights (None: off, as officially).
        offload_frozen: keep the frozen modules (VAE, CLIP) on the CPU.
        checkpoint_every, keep_checkpoints: save every N steps, keep the newest K.
        validation_every: run the objective's validation every N steps (0: never).
        cpu: train on the CPU even if an accelerator is present.
    """

    output_dir: Path
    max_steps: int = 50_000
    batch_size: int = 1
    effective_batch: int = 32
    learning_rate: float | None = None
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 0.5
    warmup_steps: int = 0
    mixed_precision: str = "no"
    optimizer: str = "adamw"
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    offload_frozen: bool = False
    seed: int = OFFICIAL_SEED
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    validation_every: int = 0
    num_workers: int = 2
    cpu: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.effective_batch >= 1, f"effective_batch must be >= 1, got {self.effective_batch}"),
            (self.mixed_precision in MIXED_PRECISION, f"mixed_precision must be one of {MIXED_PRECISION}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}"),
            (self.checkpoint_every >= 1 and self.keep_checkpoints >= 1, "checkpoint_every and keep must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def snapshot(self) -> dict[str, Any]:
        """The settings stored in ``config.json`` (``output_dir`` and ``cpu`` are not part of a run's identity)."""
        values = asdict(self)
        for name in ("output_dir", "cpu"):
            values.pop(name)
        values["betas"] = list(self.betas)
        return values


def accumulation_steps(effective_batch: int, batch_size: int, num_processes: int) -> int:
    """Passes per optimizer step so that batch_size x processes x passes = effective_batch (at least 1)."""
    return max(1, effective_batch // (batch_size * num_processes))


def step_seed(seed: int, step: int, slot: int) -> int:
    """The seed of the draws of per-process batch ``slot`` of optimizer step ``step`` (63 bits, stable)."""
    digest = hashlib.blake2b(f"toonctl-step/{seed}/{step}/{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# --------------------------------------------------------------------------------------------- reporting


class Reporter:
    """Where the engine tells what it does; the CLI shows it with Rich, the library default is silent."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def start(self, total_steps: int, start_step: int) -> None: ...

    def step(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def finish(self) -> None: ...


@dataclass
class TrainResult:
    """What a run did: the step reached, the last checkpoint, the last logged metrics, clips skipped;
    ``main_process``: False in the other processes of a multi-process run (they should print nothing)."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    interrupted: bool
    metrics: dict[str, float]
    skipped_clips: int
    trainable_parameters: int
    main_process: bool = True


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run stopped after saving a checkpoint (``checkpoint``)."""

    def __init__(self, checkpoint: Path | None, main_process: bool = True) -> None:
        super().__init__("interrupted")
        self.checkpoint = checkpoint
        self.main_process = main_process


class StopFlag:
    """The first Ctrl-C (SIGINT) or SIGTERM (a scheduler's preemption, torchrun stopping its workers) asks the
    loop to stop after the current step and save; a second one stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


# --------------------------------------------------------------------------------------------- the loop


def train(
    make_objective: Callable[[], Objective],
    inputs: Sequence[str | Path],
    data: DataSettings,
    settings: TrainSettings,
    *,
    objective_name: str,
    objective_settings: Mapping[str, Any] | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    sample_hook: SampleHook | None = None,
) -> TrainResult:
    """Train an objective on the clips under ``inputs``; see the module docstring.

    ``sample_hook`` adds objective-specific tensors to each sample in the workers (``toonctl.training.data``).

    Order of the checks, so a mistake is reported before anything slow: the data (discovery, then the first
    batch is read), the run folder (new or a matching resume), then the model (``make_objective()``).

    Raises:
        DataError: no clips, or none usable. RunError: see ``RunFolder.start``.
        TrainingInterrupted: Ctrl-C, after the checkpoint is saved.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    reporter = reporter or Reporter()
    dataset = build_dataset(inputs, data, sample_hook)
    processes = PartialState(cpu=settings.cpu).num_processes
    accumulation = accumulation_steps(settings.effective_batch, settings.batch_size, processes)
    accelerator = Accelerator(
        mixed_precision=settings.mixed_precision, cpu=settings.cpu, gradient_accumulation_steps=accumulation
    )
    rank = accelerator.process_index
    global_batch = settings.batch_size * processes * accumulation
    if global_batch != settings.effective_batch and accelerator.is_main_process:
        reporter.warn(
            f"effective batch {global_batch} ({settings.batch_size} x {processes} processes x {accumulation}"
            f" accumulated), not the {settings.effective_batch} asked for"
        )

    run = RunFolder(settings.output_dir)
    config = {
        "objective": objective_name,
        "objective_settings": dict(objective_settings or {}),
        "data": {"inputs": [str(Path(p).resolve()) for p in inputs], **_jsonable(asdict(data))},
        "train": settings.snapshot(),
    }
    # Every process checks (so a refusal stops them all), then the main one writes the snapshot.
    start_step = run.start(config, resume=resume, write=False)
    accelerator.wait_for_everyone()
    if not resume and accelerator.is_main_process:
        run.write_config(config)
    accelerator.wait_for_everyone()

    sampler = StreamSampler(
        num_clips=len(dataset),
        batch_size=settings.batch_size,
        seed=settings.seed,
        num_processes=processes,
        process_index=rank,
        start_batch=start_step * accumulation,
    )
    batches = iter(make_loader(dataset, sampler, num_workers=settings.num_workers))
    first = next(batches)  # read before the model loads: a dataset with no usable clip fails here
    batches = _chain_first(first, batches)

    set_seed(settings.seed)
    objective = make_objective()
    trained_names, params = _prepare_modules(objective, accelerator, settings)
    total_trainable = sum(p.numel() for p in params.values())
    if accelerator.is_main_process:
        summary = objective.summary() if hasattr(objective, "summary") else ""
        reporter.info(summary or f"{objective_name}: {total_trainable:,} trainable parameters")
        reporter.info(
            f"batch {global_batch} per step = {settings.batch_size} per pass x {processes} processes x"
            f" {accumulation} accumulated; {len(dataset)} clips; run folder {run.root}"
        )
    if not params:
        raise ToonctlError(f"{objective_name}: nothing to train (no parameter requires a gradient)")

    lr = settings.learning_rate or getattr(objective, "default_learning_rate", 1e-5)
    optimizer = _optimizer(list(params.values()), lr, settings, accelerator, reporter)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup(settings.warmup_steps))
    if getattr(objective, "find_unused_parameters", False):
        accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=True)
    model, optimizer = accelerator.prepare(TrainedModules(objective, trained_names), optimizer)
    root = accelerator.unwrap_model(model)
    for name in trained_names:  # FSDP may have wrapped them in place
        objective.set_module(name, root.parts[name])
    accelerator.register_for_checkpointing(scheduler)
    ema = EMA(params, settings.ema_decay) if settings.ema_decay else None
    disc = _Discriminator.build(objective, lr, settings, accelerator)

    if start_step:
        checkpoint = run.checkpoint(start_step)
        accelerator.load_state(str(checkpoint))
        if ema is not None:
            ema.load(checkpoint)
        if accelerator.is_main_process:
            reporter.info(f"resumed from {checkpoint} (step {start_step})")

    logger = MetricsLogger(run.logs_dir, start_step=start_step) if accelerator.is_main_process else None
    state = _LoopState(step=start_step)
    throughput = Throughput()
    trainable = [p for p in params.values()]
    saved: Path | None = None

    def save() -> Path | None:
        return _save(accelerator, run, state.step, settings, trained_names, accumulation, global_batch, disc, ema)

    def validate() -> None:
        if accelerator.is_main_process and hasattr(objective, "validate"):
            _validate(objective, trained_names, state.step, run.validation_dir, reporter)
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        reporter.start(settings.max_steps, start_step)
    if settings.validation_every and start_step == 0:
        validate()
    interrupted = False
    try:
        with StopFlag() as stop:
            while state.step < settings.max_steps:
                metrics = _optimizer_step(
                    model, objective, accelerator, batches, optimizer, scheduler, trainable, settings, state,
                    accumulation, processes, rank, disc, reporter,
                )  # fmt: skip
                if ema is not None:
                    ema.update()
                state.step += 1
                throughput.add(global_batch)
                if accelerator.is_main_process:
                    if state.step % settings.log_every == 0 or state.step == settings.max_steps:
                        metrics["samples_per_s"] = throughput.take()
                        metrics["skipped_clips"] = float(state.skipped)
                        logger.log(state.step, metrics)
                    state.metrics = metrics
                    reporter.step(state.step, metrics)
                if state.step % settings.checkpoint_every == 0:
                    saved = save()
                if settings.validation_every and state.step % settings.validation_every == 0:
                    validate()
                if _any_process(accelerator, stop.requested):
                    interrupted = True
                    break
        if saved is None and state.step == start_step and start_step:
            saved = run.checkpoint(start_step)  # resumed a finished run: nothing new to save
        elif saved is None or read_state(saved)["step"] != state.step:
            saved = save()
    finally:
        if logger is not None:
            logger.close()
        if accelerator.is_main_process:
            reporter.finish()
    if interrupted:
        raise TrainingInterrupted(saved, accelerator.is_main_process)
    accelerator.end_training()
    return TrainResult(
        run_dir=run.root,
        step=state.step,
        checkpoint=saved,
        interrupted=False,
        metrics=state.metrics,
        skipped_clips=state.skipped,
        trainable_parameters=total_trainable,
        main_process=accelerator.is_main_process,
    )


@dataclass
class _LoopState:
    step: int
    skipped: int = 0
    warned: set[str] = field(default_factory=set)
    metrics: dict[str, float] = field(default_factory=dict)


def _chain_first(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _warmup(steps: int) -> Callable[[int], float]:
    return lambda step: 1.0 if steps <= 0 else min(1.0, (step + 1) / steps)


def _prepare_modules(objective: Objective, accelerator, settings: TrainSettings):
    """Frozen modules: no grad, eval, on the device (or the CPU when offloaded; in the mixed-precision dtype).
    Trained ones: train() on the device. Returns the names of modules with trained parameters and those
    parameters by qualified name."""
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.mixed_precision)
    for module in objective.frozen_modules().values():
        module.requires_grad_(False).eval()
        module.to("cpu" if settings.offload_frozen else accelerator.device, dtype=low)
    if settings.gradient_checkpointing and hasattr(objective, "enable_gradient_checkpointing"):
        objective.enable_gradient_checkpointing()
    names, params = [], {}
    for name, module in objective.trainable_modules().items():
        module.to(accelerator.device).train()
        own = {f"{name}.{n}": p for n, p in module.named_parameters() if p.requires_grad}
        if own:
            names.append(name)
            params.update(own)
    return names, params


def _optimizer(params: list[nn.Parameter], lr: float, settings: TrainSettings, accelerator, reporter: Reporter):
    kwargs = dict(lr=lr, betas=tuple(settings.betas), eps=settings.adam_eps, weight_decay=settings.weight_decay)
    if settings.optimizer == "adamw8bit":
        if accelerator.device.type == "cuda":
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit(params, **kwargs)
            except ImportError:
                reporter.warn("bitsandbytes is not installed: using AdamW (pip install bitsandbytes)")
        else:
            reporter.warn("8-bit AdamW needs CUDA: using AdamW")
    # One kernel over all tensors (foreach; fused on CUDA) instead of a Python loop over ~1,100 tensors.
    fast = {"fused": True} if accelerator.device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(params, **kwargs, **fast)


@dataclass
class _Discriminator:
    """The optional adversarial part: its module (prepared) and optimizer."""

    optimizer: Any

    @classmethod
    def build(cls, objective: Objective, lr: float, settings: TrainSettings, accelerator) -> _Discriminator | None:
        module = getattr(objective, "discriminator", None)
        if module is None:
            return None
        module.to(accelerator.device).train()
        optimizer = _optimizer(
            [p for p in module.parameters() if p.requires_grad], lr, settings, accelerator, Reporter()
        )
        module, optimizer = accelerator.prepare(module, optimizer)
        objective.discriminator = module
        return cls(optimizer)


def _optimizer_step(
    model, objective, accelerator, batches, optimizer, scheduler, trainable, settings, state, accumulation,
    processes, rank, disc, reporter,
) -> dict[str, float]:  # fmt: skip
    """Accumulate ``accumulation`` passes (accelerate's ``accumulate``: no gradient all-reduce before the last,
    loss divided by the count), clip, step; returns the step's metrics (reduced over processes)."""
    losses, extra = [], {}
    grad_norm, lr = None, scheduler.get_last_lr()[0]  # the rate of this step
    root = accelerator.unwrap_model(model)
    for micro in range(accumulation):
        batch, skipped = next(batches)
        _note_skipped(skipped, state, accelerator, reporter)
        batch = _to_device(batch, accelerator.device)
        generator = _seeded(settings.seed, state.step, micro * processes + rank)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = model(batch, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()  # a no-op until the last pass
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().float())
        for key, value in root.logs.items():
            extra[key] = extra.get(key, 0.0) + float(value) / accumulation
    scheduler.step()
    metrics = {
        "loss": accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item(),
        "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
        **extra,
    }
    if disc is not None:
        generator = _seeded(settings.seed, state.step, -1 - rank)
        with accelerator.autocast():
            result = objective.discriminator_loss(batch, generator, state.step)
        # accelerate divides every loss by the accumulation count; the discriminator steps once per step.
        accelerator.backward(result.loss * (accumulation if accelerator.distributed_type != "DEEPSPEED" else 1))
        disc.optimizer.step()
        disc.optimizer.zero_grad(set_to_none=True)
        metrics["disc_loss"] = accelerator.reduce(result.loss.detach().float(), reduction="mean").item()
        metrics.update({f"disc_{k}": float(v) for k, v in result.logs.items()})
    return metrics


class TrainedModules(nn.Module):
    """The objective's trained modules under one root whose forward is the objective's loss.

    accelerate prepares this one module (DDP, DeepSpeed and FSDP all want the loss computed inside the
    wrapped module's forward, and DeepSpeed one model per engine). ``logs`` keeps the last loss's extras.
    """

    def __init__(self, objective: Objective, names: Sequence[str]) -> None:
        super().__init__()
        self._objective = [objective]  # a list: not a sub-module
        modules = objective.trainable_modules()
        self.parts = nn.ModuleDict({name: modules[name] for name in names})
        self.logs: dict[str, float] = {}

    def forward(self, batch, generator: torch.Generator | None) -> torch.Tensor:
        result = self._objective[0].compute_loss(batch, generator)
        self.logs = dict(result.logs)
        return result.loss


def _seeded(seed: int, step: int, slot: int) -> torch.Generator:
    """The step's generator; the global RNG (dropout, ...) is seeded from the same key."""
    value = step_seed(seed, step, slot)
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


def _to_device(batch, device: torch.device):
    from dataclasses import replace

    moved = {
        name: getattr(batch, name).to(device)
        for name in ("video", "fs", "hints", "hint_mask")
        if getattr(batch, name, None) is not None
    }
    return replace(batch, **moved)


def _note_skipped(skipped, state: _LoopState, accelerator, reporter: Reporter) -> None:
    for path, reason in skipped:
        state.skipped += 1
        if path not in state.warned and accelerator.is_main_process:
            state.warned.add(path)
            reporter.warn(f"skipped clip: {reason}")


def _any_process(accelerator, flag: bool) -> bool:
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def _save(accelerator, run: RunFolder, step: int, settings, names, accumulation, global_batch, disc, ema) -> Path:
    """accelerate save_state into a temporary folder, renamed into place (all processes take part)."""
    if accelerator.is_main_process:
        run.begin_checkpoint(step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(run.partial_dir(step)))
    accelerator.wait_for_everyone()
    final = run.checkpoints_dir / checkpoint_name(step)
    if accelerator.is_main_process:
        if ema is not None:
            ema.save(run.partial_dir(step))
        state = {
            "step": step,
            "modules": list(names),
            "discriminator": disc is not None,
            "ema": ema is not None,
            "num_processes": accelerator.num_processes,
            "accumulation": accumulation,
            "global_batch": global_batch,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        final = run.commit_checkpoint(step, state, keep=settings.keep_checkpoints)
    accelerator.wait_for_everyone()
    return final


def _validate(objective, names, step: int, folder: Path, reporter: Reporter) -> None:
    """The objective's validation with the trained modules in eval mode (train mode restored afterwards)."""
    modules = [objective.trainable_modules()[name] for name in names]
    try:
        for module in modules:
            module.eval()
        with torch.no_grad():
            written = objective.validate(step, folder)
        for path in written or []:
            reporter.info(f"validation: {path}")
    finally:
        for module in modules:
            module.train()


def read_trained_weights(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """A checkpoint's trained weights by module, e.g. ``{"unet": {...}, "image_proj": {...}}`` (each module's
    own ``state_dict`` keys; accelerate saved them as ``parts.<module>.<key>`` in ``model.safetensors``)."""
    from safetensors.torch import load_file

    names = read_state(checkpoint)["modules"]
    path = model_files(checkpoint, ["trained"])["trained"]
    weights = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    return {
        name: {k[len(f"parts.{name}.") :]: v for k, v in weights.items() if k.startswith(f"parts.{name}.")}
        for name in names
    }


def load_trained_modules(objective: Objective, checkpoint: Path, *, use_ema: bool = True) -> list[str]:
    """Load a checkpoint's trained weights into ``objective``'s (unprepared) modules; their names.

    Used by ``toonctl train export``: accelerate wrote the prepared ``TrainedModules`` (keys
    ``parts.<module>.<parameter>``) to ``model.safetensors``; ``trainer_state.json`` names the modules.
    With ``use_ema`` and an EMA in the checkpoint, the averaged weights replace the trained ones.
    """
    from safetensors.torch import load_file

    modules = objective.trainable_modules()
    weights = read_trained_weights(checkpoint)
    for name, state in weights.items():
        modules[name].load_state_dict(state)
    names = list(weights)
    if use_ema and (Path(checkpoint) / EMA_FILE).is_file():
        with torch.no_grad():
            for key, value in load_file(str(Path(checkpoint) / EMA_FILE)).items():
                name, parameter = key.split(".", 1)
                modules[name].get_parameter(parameter).copy_(value)
    return names
