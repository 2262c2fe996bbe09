"""The one training entry point: a run of any registered method, for `deepobf train`, `deepobf baseline`
and the sweep alike."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from ..config import RunConfig
from ..data import AttributeSpec
from ..runs import RunDir
from ..training.checkpoint import latest_checkpoint
from ..training.start import make_trainer, resolve_rules, summarize
from ..training.trainer import Trainer
from .pipeline import attach_transforms
from .registry import configure, get_method


class StageCache(Protocol):
    """Shares identical first stages between runs (see :class:`deepobfuscator.experiments.PretrainCache`)."""

    def wrap(self, trainer_cls: type[Trainer]) -> type[Trainer]:
        """A subclass of ``trainer_cls`` that stores its end-of-stage checkpoints in the cache."""
        ...

    def restore(self, trainer: Trainer) -> Any:
        """Position a fresh ``trainer`` at the furthest cached stage it can reuse."""
        ...


def method_trainer(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True,
                   on_step: Callable | None = None, cache: StageCache | None = None) -> Trainer:
    """The trainer of the run in ``out`` with its method's class and transforms (``cfg`` is configured here;
    when resuming an existing run its recorded config is used instead)."""
    run = RunDir(Path(out))
    cfg = run.read_config() if resume and run.exists() else configure(cfg)
    cls = get_method(cfg.method).trainer_cls
    if cache is not None:
        cls = cache.wrap(cls)
    trainer = make_trainer(cfg, run.path, resume=resume, progress=progress, on_step=on_step, trainer_cls=cls)
    attach_transforms(trainer.cfg, trainer.modules, run.path, trainer.device)
    return trainer


def resolved_config(cfg: RunConfig, task_specs: list[AttributeSpec]) -> RunConfig:
    """``cfg`` configured for its method with every rule a run applies when it is created resolved for ``task_specs``
    (what its config.yaml would record): enough to build the method's modules without a run directory."""
    cfg = configure(cfg)
    resolve_rules(cfg, task_specs, get_method(cfg.method).trainer_cls)
    return cfg


def train_run(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True,
              on_step: Callable | None = None, cache: StageCache | None = None) -> dict[str, Any]:
    """Train (or continue) the run in ``out`` with its method's trainer; return (and write) its test summary."""
    trainer = method_trainer(cfg, out, resume=resume, progress=progress, on_step=on_step, cache=cache)
    if resume and trainer.run.is_complete():
        return summarize(trainer)
    if cache is not None and latest_checkpoint(trainer.run.checkpoints) is None:
        cache.restore(trainer)
    trainer.fit()
    return summarize(trainer)
