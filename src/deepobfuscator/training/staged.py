"""The staged trainer base shared by the image and text trainers: stages of epochs over a batch loader,
one update step, checkpoints with resume (and metrics truncation), a metrics log and progress bars.

A subclass names its stages, builds its modules and optimisers, and says per stage how many epochs
there are, which loader feeds it and which step function runs on each batch (:meth:`stage_step`);
:meth:`fit` does the rest. Where training is lives in :class:`Position`, saved with every checkpoint.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
from torch import nn

from ..progress import progress_bar, progress_write
from ..runs import RunDir
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_modules
from .modules import set_trainable


class StopTraining(Exception):
    """Raised by a step callback to stop training early (used by tests to simulate a kill)."""


@dataclass
class Position:
    """Where training is: stage index, epoch within the stage, next batch within the epoch."""

    stage: int = 0
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    metrics_lines: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass
class GradSync:
    """Hook that averages gradients across data-parallel ranks before each optimiser step (no-op here)."""

    rank: int = 0
    world: int = 1

    def __call__(self, params: Iterable[nn.Parameter]) -> None:
        """Average ``params``' gradients across ranks."""

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a tensor of statistics across ranks."""
        return values


class BatchSource(Protocol):
    """What a stage trains on: a number of batches per epoch, and the batches of one epoch from ``start`` on."""

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Any]:
        """The batches of ``epoch`` from batch number ``start`` on."""
        ...


class StagedTrainer:
    """Stages of epochs for one run directory; resumable at any checkpoint.

    Subclasses set ``stages``, ``cfg``, ``run``, ``optimizers``, ``progress``, ``device``, ``sync``,
    ``on_step`` and ``position``, and implement :meth:`module_dict`, :meth:`epochs`,
    :meth:`train_loader`, :meth:`stage_step` and :meth:`validate`.
    """

    stages: tuple[str, ...] = ()
    cfg: Any
    run: RunDir
    optimizers: dict[str, torch.optim.Optimizer]
    progress: bool
    device: str
    sync: GradSync
    on_step: Callable[[Any, Position], None] | None
    position: Position

    # ----------------------------------------------------------------- what a subclass defines
    def module_dict(self) -> dict[str, nn.Module]:
        """The trained modules by name (what checkpoints hold)."""
        raise NotImplementedError

    def epochs(self, stage: int) -> int:
        """Configured epochs of stage ``stage``."""
        raise NotImplementedError

    def train_loader(self, stage: int) -> BatchSource:
        """The shuffled training batches of ``stage``."""
        raise NotImplementedError

    def stage_step(self, stage: int) -> Callable[[Any, int], dict[str, Any]]:
        """The step function ``(batch, step) -> losses`` of ``stage``."""
        raise NotImplementedError

    def validate(self, stage: int, split: str = "val") -> dict[str, Any]:
        """Metrics of the modules after an epoch of ``stage`` on ``split``."""
        raise NotImplementedError

    def begin_epoch(self, stage: int) -> None:
        """Called before every epoch of ``stage`` (also a resumed one); nothing by default."""

    def checkpoint_every(self) -> int:
        """Steps between mid-epoch checkpoints (0: only at epoch ends)."""
        return 0

    def epoch_record(self, stage: int, seconds: float, steps: int, batches: int,
                     val: dict[str, Any]) -> dict[str, Any]:
        """The metrics.jsonl record of one finished epoch."""
        return {"stage": self.stages[stage], "epoch": self.position.epoch + 1, "split": "val", "seconds": seconds,
                "batches": batches, **val}

    def format_record(self, record: dict[str, Any]) -> str:
        """One human line for a metrics record (printed under the progress bar)."""
        return json.dumps(record)

    def final_metadata(self) -> dict[str, str]:
        """Metadata stored with the final weights."""
        return {"run": self.cfg.name}

    def optional_state(self) -> tuple[str, ...]:
        """Modules (and optimisers) that checkpoints written by earlier versions may lack."""
        return ()

    def final_modules(self) -> dict[str, nn.Module]:
        """What the final weights hold (default: every checkpointed module)."""
        return self.module_dict()

    # ----------------------------------------------------------------- shared plumbing
    def set_trainable(self, *names: str) -> None:
        """Train mode + gradients for ``names``; eval mode and frozen parameters for the other modules."""
        set_trainable(self.module_dict().items(), names)

    def _update(self, names: tuple[str, ...], loss: torch.Tensor) -> None:
        modules = self.module_dict()
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            self.sync(modules[name].parameters())
            self.optimizers[name].step()

    def _log(self, record: dict[str, Any]) -> None:
        if self.sync.rank != 0:
            return
        with open(self.run.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.position.metrics_lines += 1

    def _checkpoint(self) -> None:
        if self.sync.rank != 0:
            return
        save_checkpoint(self.run.checkpoints, self.module_dict(), self.optimizers, self.position.as_dict())

    def resume(self) -> bool:
        """Restore the latest checkpoint if there is one; returns True if it did."""
        ckpt = latest_checkpoint(self.run.checkpoints)
        if ckpt is None:
            return False
        state = load_checkpoint(ckpt, self.module_dict(), self.optimizers, optional=self.optional_state())
        self.position = Position(**state)
        if self.run.metrics.is_file() and self.sync.rank == 0:  # drop records written after the checkpoint
            lines = self.run.metrics.read_text().splitlines(keepends=True)[: self.position.metrics_lines]
            self.run.metrics.write_text("".join(lines))
        return True

    def fit(self) -> dict[str, Any]:
        """Train from the current position to the end; write the final weights; return the last epoch's record."""
        last: dict[str, Any] = {}
        pos = self.position
        every = self.checkpoint_every()
        while pos.stage < len(self.stages):
            if pos.epoch >= self.epochs(pos.stage):
                pos.stage, pos.epoch, pos.step = pos.stage + 1, 0, 0
                continue
            self.begin_epoch(pos.stage)
            loader = self.train_loader(pos.stage)
            step_fn = self.stage_step(pos.stage)
            name = self.stages[pos.stage]
            bar = progress_bar(total=len(loader), initial=pos.step, disable=not self.progress or self.sync.rank != 0,
                               desc=f"{name} {pos.epoch + 1}/{self.epochs(pos.stage)}", unit="batch", leave=False)
            started, steps_timed = time.perf_counter(), 0
            for batch in loader.epoch(pos.epoch, start=pos.step):
                losses = step_fn(batch.to(self.device), pos.step)
                pos.step += 1
                pos.global_step += 1
                steps_timed += 1
                bar.update(1)
                bar.set_postfix({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in losses.items()})
                if self.on_step:
                    self.on_step(self, pos)
                if every and pos.global_step % every == 0 and pos.step < len(loader):
                    self._checkpoint()
            seconds = time.perf_counter() - started
            bar.close()
            val = self.validate(pos.stage)
            last = self.epoch_record(pos.stage, seconds, steps_timed, len(loader), val)
            self._log(last)
            if self.progress and self.sync.rank == 0:
                progress_write(self.format_record(last))
            pos.epoch, pos.step = pos.epoch + 1, 0
            self._checkpoint()
        if self.sync.rank == 0:
            save_modules(self.final_modules(), self.run.final, metadata=self.final_metadata())
        return last
