"""Training: the modules of a run, checkpoints, and Algorithm 1 (:class:`Trainer`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..config import RunConfig
from ..runs import RunDir, RunError, init_run
from ..utils import atomic_write_json, resolve_device, seed_everything
from .modules import MODULE_NAMES, Modules, build_modules, feature_shape
from .trainer import STAGES, GradSync, Position, StopTraining, Trainer, majority_rate


def make_trainer(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True,
                 sync: GradSync | None = None, on_step: Callable | None = None,
                 trainer_cls: type[Trainer] = Trainer) -> Trainer:
    """Create or re-open the run directory and a trainer positioned at its latest checkpoint."""
    from .distributed import launched, make_distributed_trainer
    from .precision import apply_precision

    if sync is None and launched():  # under torchrun: one rank of a data-parallel job
        return make_distributed_trainer(cfg, out, resume=resume, progress=progress, on_step=on_step,
                                        trainer_cls=trainer_cls)
    run = RunDir(Path(out))
    if run.exists() and not resume:
        raise RunError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")
    if resume and run.exists():
        cfg = run.read_config()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    data, settings = init_run(run, cfg, progress=progress and (sync is None or sync.rank == 0))
    cfg = run.read_config()
    modules = build_modules(cfg, data.task_specs, data.private_specs).to(device)
    apply_precision(modules, cfg.train.amp, cfg.train.channels_last, device)
    trainer = trainer_cls(cfg, run, data, modules, settings, run.read_noise(), progress=progress, device=device,
                          sync=sync or GradSync(), on_step=on_step)
    if resume:
        trainer.resume()
    return trainer


def train_run(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True,
              on_step: Callable | None = None) -> dict[str, Any]:
    """Train a run end to end (or continue it) and return its test-split summary."""
    trainer = make_trainer(cfg, out, resume=resume, progress=progress, on_step=on_step)
    if trainer.run.is_complete() and resume:
        return summarize(trainer)
    trainer.fit()
    return summarize(trainer)


def summarize(trainer: Trainer) -> dict[str, Any]:
    """Held-out test metrics of the co-trained modules, with majority rates; written to train_summary.json."""
    test = trainer.validate(stage=2 if trainer.cfg.train.epochs_attacker or trainer.cfg.train.epochs_adversarial else 0,
                            split="test")
    data = trainer.data
    idx = data.split["test"]
    summary = {
        "run": str(trainer.run.path),
        "method": trainer.cfg.method,
        "seed": trainer.cfg.train.seed,
        "split_seed": trainer.cfg.data.split_seed,
        "test_images": int(len(idx)),
        "test": test,
        "majority_rate": {
            **{s.name: majority_rate(data.task[idx, i]) for i, s in enumerate(data.task_specs)},
            **{s.name: majority_rate(data.private[idx, i]) for i, s in enumerate(data.private_specs)},
        },
        "seconds_per_epoch": _seconds_per_stage(trainer.run),
    }
    if trainer.sync.rank == 0:
        atomic_write_json(trainer.run.path / "train_summary.json", summary)
    return summary


def _seconds_per_stage(run: RunDir) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for rec in run.read_metrics():
        out.setdefault(rec["stage"], []).append(rec["seconds"])
    return {k: sum(v) / len(v) for k, v in out.items()}


__all__ = [
    "MODULE_NAMES", "GradSync", "Modules", "Position", "STAGES", "StopTraining", "Trainer", "build_modules",
    "feature_shape", "make_trainer", "summarize", "train_run",
]
