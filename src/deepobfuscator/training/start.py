"""Opening a run for training: write its config, split and noise image once, build a positioned trainer,
and summarise a finished run on its test split."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from .. import __version__
from ..config import RunConfig, save_config
from ..data import AttributeSpec, PreparedData, load_index, prepare_data, save_split
from ..losses import MSSSIMSettings, make_noise_image, resolve_msssim
from ..metrics import majority_rate
from ..runs import RunDir, RunError, open_run_data, spec_to_dict
from ..utils import atomic_write_json, git_commit, resolve_device, seed_everything
from .distributed import launched, make_distributed_trainer
from ..models.bottleneck import AUTO_CHANNELS, auto_channels
from .modules import build_modules, feature_shape
from .precision import apply_precision, resolve_amp, resolve_channels_last
from .staged import GradSync
from .trainer import Trainer

C = TypeVar("C")


def begin_run(out: Path, cfg: C, resume: bool, read_config: Callable[[RunDir], C]) -> tuple[RunDir, C]:
    """Open ``out`` for training (image or text): refuse to overwrite a run unless resuming, use a resumed
    run's recorded config, then set the thread count and seed every generator."""
    run = RunDir(Path(out))
    if run.exists() and not resume:
        raise RunError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")
    if resume and run.exists():
        cfg = read_config(run)
    if cfg.train.threads:  # type: ignore[attr-defined]
        torch.set_num_threads(cfg.train.threads)  # type: ignore[attr-defined]
    seed_everything(cfg.train.seed)  # type: ignore[attr-defined]
    return run, cfg


def resolve_rules(cfg: RunConfig, task_specs: list[AttributeSpec], trainer_cls: type[Trainer] = Trainer) -> None:
    """Fill in what a run chooses by rule from its intended attributes (the bottleneck width, then the method's own
    choices, :meth:`Trainer.resolve_at_creation`), each recorded under ``cfg.meta``; done once, when it is created."""
    if cfg.model.bottleneck_channels == AUTO_CHANNELS:  # the rule, applied to the intended attributes, recorded
        counts = [s.num_classes for s in task_specs]
        cfg.model.bottleneck_channels = auto_channels(counts)
        cfg.meta["bottleneck_rule"] = {"rule": "K - 1 channels per K-class intended attribute (1 per binary one)",
                                       "classes": counts, "channels": cfg.model.bottleneck_channels}
    trainer_cls.resolve_at_creation(cfg, task_specs)


def init_run(run: RunDir, cfg: RunConfig, progress: bool = True,
             trainer_cls: type[Trainer] = Trainer) -> tuple[PreparedData, MSSSIMSettings]:
    """Create (or re-open) a run: write config, split and noise image once, with what ``trainer_cls`` resolves from
    the data (:meth:`Trainer.resolve_at_creation`); return its data."""
    settings = resolve_msssim(cfg.msssim, cfg.data.image_size)
    if run.exists():
        data, _ = open_run_data(run, cfg, progress=progress)
        return data, settings
    index = load_index(cfg.data.dataset, cfg.data.root, cfg.data.max_images, cfg.data.cache_dir)
    data, split = prepare_data(cfg.data, index=index, progress=progress)
    run.path.mkdir(parents=True, exist_ok=True)  # only once the data is known good: a typo leaves no directory
    cfg.data.root = str(index.root)
    requested = cfg.train.amp
    device = resolve_device(cfg.train.device)
    cfg.train.amp = resolve_amp(requested, device)  # config.yaml records what ran
    cfg.train.channels_last = resolve_channels_last(cfg.train.channels_last, device, cfg.model.width)
    resolve_rules(cfg, data.task_specs, trainer_cls)
    cfg.meta.update({"version": __version__, "commit": git_commit(), "msssim": settings.as_dict(),
                     "feature_shape": list(feature_shape(cfg)), "split_source": split["source"],
                     "task_specs": [spec_to_dict(s) for s in data.task_specs],
                     "private_specs": [spec_to_dict(s) for s in data.private_specs],
                     "split_sizes": {k: len(split[k]) for k in ("train", "val", "test")},
                     "amp_requested": requested})
    save_split(split, run.split)
    run.write_noise(make_noise_image(cfg.data.image_size, cfg.privacy.noise_seed, cfg.privacy.noise_std))
    save_config(cfg, run.config)
    return data, settings


def make_trainer(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True,
                 sync: GradSync | None = None, on_step: Callable | None = None,
                 trainer_cls: type[Trainer] = Trainer) -> Trainer:
    """Create or re-open the run directory and a ``trainer_cls`` positioned at its latest checkpoint.

    Under torchrun (and no explicit ``sync``) this builds one rank of a data-parallel job.
    """
    if sync is None and launched():
        def build(rank_sync: GradSync, rank_resume: bool) -> Trainer:
            return make_trainer(cfg, out, resume=rank_resume, progress=progress, sync=rank_sync, on_step=on_step,
                                trainer_cls=trainer_cls)

        return make_distributed_trainer(cfg, out, resume=resume, build=build)
    run, cfg = begin_run(out, cfg, resume, RunDir.read_config)
    device = resolve_device(cfg.train.device)
    data, settings = init_run(run, cfg, progress=progress and (sync is None or sync.rank == 0), trainer_cls=trainer_cls)
    cfg = run.read_config()
    modules = build_modules(cfg, data.task_specs, data.private_specs).to(device)
    apply_precision(modules, cfg.train.amp, resolve_channels_last(cfg.train.channels_last, device, cfg.model.width),
                    device)
    trainer = trainer_cls(cfg, run, data, modules, settings, run.read_noise(), progress=progress, device=device,
                          sync=sync or GradSync(), on_step=on_step)
    if resume:
        trainer.resume()
    return trainer


def summarize(trainer: Trainer) -> dict[str, Any]:
    """Held-out test metrics of the co-trained modules, with majority rates, training seconds and the intended
    attributes that stalled at their majority rate; written to train_summary.json."""
    test = trainer.validate(stage=2 if trainer.cfg.train.epochs_attacker or trainer.cfg.train.epochs_adversarial else 0,
                            split="test")
    data = trainer.data
    idx = data.split["test"]
    records = trainer.run.read_metrics()
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
        "seconds_per_epoch": _seconds_per_stage(records),
        "seconds": round(sum(rec["seconds"] for rec in records), 2),
    }
    summary["stalled"] = stalled_attributes(summary)
    summary["fell"] = fallen_attributes(summary, records)
    deployed = [dict(rec["deployed"], stage=rec["stage"], of=rec["epoch"]) for rec in records if "deployed" in rec]
    if deployed:  # a stage that chose its epoch by validation (the Encoder's stage 1)
        summary["deployed"] = deployed[-1]
    if trainer.sync.rank == 0:
        atomic_write_json(trainer.run.path / "train_summary.json", summary)
    return summary


STALL_MARGIN = 0.02  # an intended accuracy this close to its majority rate has learned (next to) nothing


def stalled_attributes(summary: dict[str, Any]) -> list[str]:
    """Intended attributes whose test accuracy ends within :data:`STALL_MARGIN` of their majority rate."""
    accuracy, majority = summary["test"].get("C_acc", {}), summary["majority_rate"]
    return [name for name, acc in accuracy.items()
            if majority.get(name) is not None and acc <= majority[name] + STALL_MARGIN]


FALL_MARGIN = 0.05  # a deployed accuracy this far below the best validation epoch's was not what training reached


def fallen_attributes(summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Intended attributes whose test accuracy ends more than :data:`FALL_MARGIN` below their best validation
    accuracy in ``records`` (metrics.jsonl): the deployed weights are an epoch that fell, not the best one."""
    best: dict[str, tuple[float, str, int]] = {}
    for rec in records:
        for name, acc in (rec.get("C_acc") or {}).items():
            if name not in best or acc > best[name][0]:
                best[name] = (acc, rec["stage"], rec["epoch"])
    return {name: {"test": acc, "best_val": best[name][0], "stage": best[name][1], "epoch": best[name][2]}
            for name, acc in summary["test"].get("C_acc", {}).items()
            if name in best and acc < best[name][0] - FALL_MARGIN}


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def format_summary(summary: dict[str, Any], run_dir: str | Path) -> str:
    """What a person reads when training ends: the intended accuracy beside its majority rate, the co-trained
    adversaries labelled as training diagnostics (never privacy results), a stall warning, and what to run next."""
    test, majority = summary.get("test", {}), summary.get("majority_rate", {})
    rows = [("intended attribute", "test accuracy", "majority rate")]
    rows += [(name, f"{acc:.3f}", f"{majority.get(name, float('nan')):.3f}") for name, acc in test.get("C_acc", {}).items()]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"Trained `{summary.get('method')}` (seed {summary.get('seed')}) in "
             f"{_duration(summary.get('seconds', 0.0))}; tested on {summary.get('test_images')} held-out images.", ""]
    lines += ["  " + "   ".join(cell.ljust(width[i]) for i, cell in enumerate(row)) for row in rows]
    if "deployed" in summary:
        chosen = summary["deployed"]
        lines += ["", f"Deployed: O and C of {chosen['stage']} epoch {chosen['epoch']} of {chosen['of']} "
                      f"(validation {chosen['val_utility']:.3f}; {chosen['rule']})."]
    for name in summary.get("stalled", []):
        lines += ["", f"WARNING: {name} ended at its majority rate: C learned (next to) nothing for it. Train longer "
                      "(more train.epochs_pretrain), check the labels, or lower train.lr."]
    for name, fell in summary.get("fell", {}).items():
        lines += ["", f"WARNING: {name} ends at {fell['test']:.3f} on the test split, but validation reached "
                      f"{fell['best_val']:.3f} ({fell['stage']} epoch {fell['epoch']}): the deployed weights are an "
                      "epoch that fell. Compare nothing with this run as it is; retrain (another seed) or lower train.lr."]
    diagnostics = [f"AC {k} accuracy {v:.3f} (majority {majority.get(k, float('nan')):.3f})"
                   for k, v in test.get("AC_acc", {}).items()]
    if "AR_msssim" in test:
        diagnostics.append(f"AR MS-SSIM {test['AR_msssim']:.3f}")
    if diagnostics:
        lines += ["", "Training diagnostics, not privacy results (adversaries co-trained against a moving obfuscator): "
                  + "; ".join(diagnostics) + "."]
    lines += ["", f"Run directory: {run_dir}", "Next:",
              f"  deepobf attack {run_dir}     # fresh attackers on the frozen pipeline: the privacy numbers",
              f"  deepobf inspect {run_dir}    # what the phone sends, the cloud answers and an eavesdropper recovers"]
    return "\n".join(lines)


def _seconds_per_stage(records: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for rec in records:
        out.setdefault(rec["stage"], []).append(rec["seconds"])
    return {k: sum(v) / len(v) for k, v in out.items()}
