"""Train a run of any registered method (DeepObfuscator or a baseline), optionally via the pretrain cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..config import RunConfig
from ..runs import RunDir
from ..training import make_trainer, summarize
from ..training.checkpoint import latest_checkpoint
from .cache import PretrainCache
from .registry import configure, trainer_class


def train_method(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True,
                 cache_dir: Path | None = None, on_step: Callable | None = None) -> dict[str, Any]:
    """Train (or continue) the run in ``out`` with its method's trainer; return the test summary.

    ``cfg`` must already be configured (:func:`configure`); when resuming an existing run its
    recorded config is used instead.
    """
    run = RunDir(Path(out))
    if resume and run.exists():
        cfg = run.read_config()
    else:
        cfg = configure(cfg)
    cls = trainer_class(cfg)
    cache = PretrainCache(Path(cache_dir)) if cache_dir else None
    if cache is not None:
        cls = cache.wrap(cls)
    trainer = make_trainer(cfg, run.path, resume=resume, progress=progress, on_step=on_step, trainer_cls=cls)
    if resume and run.is_complete():
        return summarize(trainer)
    if cache is not None and latest_checkpoint(run.checkpoints) is None:
        cache.restore(trainer)
    trainer.fit()
    return summarize(trainer)
