"""`deepobf attack`: parse options, run the suite, print the Markdown summary."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..training.precision import AMP_CHOICES
from .base import BUDGETS, AttackSettings, parse_repeat
from .registry import ATTACKERS


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _repeats(value: str) -> list[float]:
    try:
        return [parse_repeat(v) for v in _csv(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(value: str) -> int:
    if value == "auto":
        return 0
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers or 'auto', got {value!r}") from None


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a trained run with every selected attacker and report honest privacy metrics."""
    import torch

    from .sources import AttackSources
    from .suite import output_paths, run_attack
    from ..runs import RunDir

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = AttackSettings.from_budget(
        args.budget, attackers=args.attackers, split=args.split,
        recon_epochs=args.recon_epochs if args.recon_epochs is not None else args.epochs,
        attr_epochs=args.attr_epochs if args.attr_epochs is not None else args.epochs,
        recon_extend=args.recon_extend, patience=args.patience, val_fraction=args.val_fraction, seeds=args.seeds,
        repeat=args.repeat, limit_draws=args.limit_draws, fast=not args.black_box, warm_start=not args.cold,
        workers=args.workers,
        lr=args.lr, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, recon_loss=args.recon_loss,
        max_train_images=args.max_train_images, mlp_hidden=args.mlp_hidden, constant_steps=args.constant_steps,
        inversion_images=args.inversion_images,
        inversion_steps=args.inversion_steps, inversion_lr=args.inversion_lr, tv_weight=args.tv_weight,
        reid_images=args.reid_images, reid_similarity=args.reid_similarity, grid_images=args.grid_images,
        bootstrap=args.bootstrap, seed=args.seed, device=args.device, amp=args.amp,
    )
    sources = AttackSources(
        data_root=str(Path(args.data).expanduser().resolve()) if args.data else None, dataset=args.dataset,
        attacker_root=str(Path(args.attacker_data).expanduser().resolve()) if args.attacker_data else None,
        attacker_dataset=args.attacker_dataset, max_images=args.max_images,
    )
    run_attack(args.run_dir, settings, sources, out=args.out, retrain=args.retrain, progress=not args.no_progress)
    json_path, md_path, grid_path = output_paths(RunDir(Path(args.run_dir)), args.out)
    print(md_path.read_text())
    print(f"wrote {json_path}, {md_path}" + (f", {grid_path}" if grid_path.is_file() else ""))
    print(f"next: deepobf inspect {args.run_dir}   # the saved attackers on any image, in a browser\n"
          f"      deepobf report {args.run_dir} OTHER_RUN... --out reports/cmp   # compare runs")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `deepobf attack`."""
    d = AttackSettings()
    p = subparsers.add_parser("attack", help="train attackers from scratch on a run's frozen features and report privacy",
                              description=cmd_attack.__doc__)
    p.add_argument("run_dir", help="a trained run directory")
    p.add_argument("--data", help="evaluate on another dataset root (freshly split with the run's split seed)")
    p.add_argument("--dataset", help="loader name for --data (default: the run's dataset)")
    p.add_argument("--attacker-data", help="realistic attacker: train attackers on this root's train split (public data)")
    p.add_argument("--attacker-dataset", help="loader name for --attacker-data (default: the run's dataset)")
    p.add_argument("--max-images", type=int, help="use only the first N images of --data / --attacker-data")
    p.add_argument("--attackers", type=_csv,
                   help=f"comma-separated subset of {','.join(ATTACKERS.names())} (default: all)")
    p.add_argument("--out", help="attack.json path (default: RUN_DIR/attack.json; .md and grid PNG beside it)")
    p.add_argument("--split", default=d.split, choices=["test", "val", "all"],
                   help="evaluation split (default: test); all: every image of --data not used to train the attackers")
    p.add_argument("--budget", default="full", choices=list(BUDGETS),
                   help="attacker budgets: full (the defaults below) or quick (smaller caps for screening: "
                        + ", ".join(f"{k} {v}" for k, v in BUDGETS["quick"].items()) + "); options below override")
    p.add_argument("--workers", type=_workers, default=0,
                   help="attacker processes, threads split between them (default auto: one per CPU up to 4, 1 on a GPU)")
    p.add_argument("--black-box", action="store_true",
                   help="stochastic defences: send images through the whole pipeline at every access even when it "
                        "declares a noise tail (the exact slow path; for comparisons)")
    p.add_argument("--cold", action="store_true",
                   help="stochastic defences: train every learned attacker at m = 8 and inf from scratch instead of "
                        "from its own fit at the next smaller m (slower; for comparisons)")
    p.add_argument("--epochs", type=int, help="cap on the training epochs of every learned attacker")
    p.add_argument("--recon-epochs", type=int, help=f"max epochs of reconstruction attackers (default {d.recon_epochs})")
    p.add_argument("--recon-extend", type=int,
                   help=f"epochs a reconstruction attacker still improving at its cap may train beyond it, while each "
                        f"patience window lowers its best validation loss by {d.extend_min_delta * 100:.1f}%% (default "
                        "as many as the cap; 0: stop at the cap)")
    p.add_argument("--attr-epochs", type=int, help=f"max epochs of attribute attackers (default {d.attr_epochs})")
    p.add_argument("--patience", type=int,
                   help=f"early stopping: epochs without a better validation loss (default {d.patience})")
    p.add_argument("--val-fraction", type=float,
                   help=f"share of the attackers' training images held out for early stopping (default {d.val_fraction})")
    p.add_argument("--seeds", type=_ints, help="attacker seeds, e.g. 0,1,2: best for the attacker and the spread")
    p.add_argument("--repeat", type=_repeats,
                   help="stochastic defences: repeated-query counts m (features averaged over m draws; inf: the "
                        "averaging limit; default 1,8,inf)")
    p.add_argument("--limit-draws", type=int,
                   help=f"black-box path: draws averaged to estimate m = inf (default {d.limit_draws})")
    p.add_argument("--mlp-hidden", type=int, help=f"hidden width of the mlp/oracle attackers (default {d.mlp_hidden})")
    p.add_argument("--constant-steps", type=int,
                   help=f"optimisation steps of the constant-image reconstruction floor (default {d.constant_steps})")
    p.add_argument("--lr", type=float, help=f"attackers' Adam learning rate (default {d.lr})")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--eval-batch-size", type=int, help=f"default {d.eval_batch_size}")
    p.add_argument("--recon-loss", choices=["msssim", "mse"],
                   help="reconstructor training loss: L(AR1) = 1 - MS-SSIM (default) or pixel MSE")
    p.add_argument("--max-train-images", type=int, help="train attackers on a seeded subset of this many images")
    p.add_argument("--inversion-images", type=int, help=f"default {d.inversion_images}")
    p.add_argument("--inversion-steps", type=int, help=f"default {d.inversion_steps}")
    p.add_argument("--inversion-lr", type=float, help=f"default {d.inversion_lr}")
    p.add_argument("--tv-weight", type=float, help=f"total-variation prior weight of inversion (default {d.tv_weight})")
    p.add_argument("--reid-images", type=int, help=f"re-identification queries (default {d.reid_images})")
    p.add_argument("--reid-similarity", choices=["msssim", "mse"], help=f"default {d.reid_similarity}")
    p.add_argument("--grid-images", type=int, help=f"columns of recon_grid.png (default {d.grid_images})")
    p.add_argument("--bootstrap", type=int, help=f"bootstrap resamples for 95%% intervals (default {d.bootstrap})")
    p.add_argument("--seed", type=int, help="attack seed (recorded; default 0)")
    p.add_argument("--device", help="cpu, cuda, or auto (default cpu)")
    p.add_argument("--amp", choices=list(AMP_CHOICES),
                   help="precision of the learned attackers: auto (the default: bf16 where the device computes it "
                        "natively, else float32), none (float32) or bf16 autocast (weights and losses stay float32); "
                        "recorded in attack.json")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--retrain", action="store_true", help="retrain attackers even if a finished result is stored")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=cmd_attack)
