"""`deepobf attack`: parse options, run the suite, print the Markdown summary."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .base import AttackSettings
from .registry import ATTACKERS


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a trained run with every selected attacker and report honest privacy metrics."""
    import torch

    from .sources import AttackSources
    from .suite import output_paths, run_attack
    from ..runs import RunDir

    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = AttackSettings()
    settings = AttackSettings(
        attackers=args.attackers, split=args.split,
        recon_epochs=_first(args.recon_epochs, args.epochs, defaults.recon_epochs),
        attr_epochs=_first(args.attr_epochs, args.epochs, defaults.attr_epochs),
        patience=args.patience, val_fraction=args.val_fraction, seeds=args.seeds, repeat=args.repeat,
        lr=args.lr, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, recon_loss=args.recon_loss,
        max_train_images=args.max_train_images, mlp_hidden=args.mlp_hidden, constant_steps=args.constant_steps,
        inversion_images=args.inversion_images,
        inversion_steps=args.inversion_steps, inversion_lr=args.inversion_lr, tv_weight=args.tv_weight,
        reid_images=args.reid_images, reid_similarity=args.reid_similarity, grid_images=args.grid_images,
        bootstrap=args.bootstrap, seed=args.seed, device=args.device,
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
    p.add_argument("--epochs", type=int, help="cap on the training epochs of every learned attacker")
    p.add_argument("--recon-epochs", type=int, help=f"max epochs of reconstruction attackers (default {d.recon_epochs})")
    p.add_argument("--attr-epochs", type=int, help=f"max epochs of attribute attackers (default {d.attr_epochs})")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"early stopping: epochs without a better validation loss (default {d.patience})")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"share of the attackers' training images held out for early stopping (default {d.val_fraction})")
    p.add_argument("--seeds", type=_ints, help="attacker seeds, e.g. 0,1,2: best for the attacker and the spread")
    p.add_argument("--repeat", type=_ints,
                   help="stochastic defences: repeated-query counts m (features averaged over m draws; default 1,8)")
    p.add_argument("--mlp-hidden", type=int, default=d.mlp_hidden, help="hidden width of the mlp/oracle attackers")
    p.add_argument("--constant-steps", type=int, default=d.constant_steps,
                   help="optimisation steps of the constant-image reconstruction floor")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--recon-loss", default=d.recon_loss, choices=["msssim", "mse"],
                   help="reconstructor training loss: L(AR1) = 1 - MS-SSIM (default) or pixel MSE")
    p.add_argument("--max-train-images", type=int, help="train attackers on a seeded subset of this many images")
    p.add_argument("--inversion-images", type=int, default=d.inversion_images)
    p.add_argument("--inversion-steps", type=int, default=d.inversion_steps)
    p.add_argument("--inversion-lr", type=float, default=d.inversion_lr)
    p.add_argument("--tv-weight", type=float, default=d.tv_weight, help="total-variation prior weight of inversion")
    p.add_argument("--reid-images", type=int, default=d.reid_images, help="re-identification queries")
    p.add_argument("--reid-similarity", default=d.reid_similarity, choices=["msssim", "mse"])
    p.add_argument("--grid-images", type=int, default=d.grid_images, help="columns of recon_grid.png")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="bootstrap resamples for 95%% intervals")
    p.add_argument("--seed", type=int, default=d.seed, help="attack seed (recorded)")
    p.add_argument("--device", default=d.device, help="cpu, cuda, or auto")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--retrain", action="store_true", help="retrain attackers even if a finished result is stored")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=cmd_attack)
