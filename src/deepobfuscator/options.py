"""Command-line options shared by the commands that create a run (`train`, `baseline`), and the config
they resolve to. Lives below every layer so each component's ``command.py`` can use it."""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import PRESETS, RunConfig, apply_overrides, preset
from .data import LOADERS


def csv_list(value: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (an argparse type)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by commands that create a run from a preset."""
    p.add_argument("--preset", default="demo", help=f"configuration preset ({', '.join(PRESETS.names())})")
    p.add_argument("--data", help="dataset root in its official layout (default: the embedded synthetic faces)")
    p.add_argument("--dataset", help=f"dataset loader name ({', '.join(LOADERS)}; default celeba)")
    p.add_argument("--task", type=csv_list, help="intended attributes, comma-separated (e.g. Smiling,High_Cheekbones)")
    p.add_argument("--private", type=csv_list, help="private attributes, comma-separated (e.g. Male,Heavy_Makeup)")
    add_output_options(p, "runs/<preset>-<method>", "--set train.lr=1e-4 --set privacy.lambda1=5")
    p.add_argument("--json", action="store_true", help="print train_summary.json instead of the short summary")


def add_output_options(p: argparse.ArgumentParser, default_out: str, set_example: str) -> None:
    """Where a run goes and how it is steered: --out, --seed, --resume, --set, --no-progress (image and text)."""
    p.add_argument("--out", help=f"run directory (default: {default_out})")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"config override, e.g. {set_example} (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_config(args: argparse.Namespace, method: str | None = None) -> RunConfig:
    """Preset + CLI options + --set overrides -> RunConfig. The method is the preset's unless the command names one
    (``deepobf baseline NAME``); ``--set method=NAME`` overrides both."""
    cfg = preset(args.preset)
    if method is not None and method != cfg.method:  # the preset's method parameters belong to the preset's method
        cfg.method, cfg.params = method, {}
    if getattr(args, "data", None):
        cfg.data.root = str(Path(args.data).expanduser().resolve())
    if getattr(args, "dataset", None):
        cfg.data.dataset = args.dataset
    if getattr(args, "task", None):
        cfg.data.task = args.task
    if getattr(args, "private", None) is not None:
        cfg.data.private = args.private
    if getattr(args, "seed", None) is not None:
        cfg.train.seed = args.seed
    if getattr(args, "defend", None):
        cfg.privacy.defend = args.defend
    if getattr(args, "device", None):
        cfg.train.device = args.device
    cfg = apply_overrides(cfg, args.overrides)
    cfg.name = Path(args.out).name if args.out else f"{args.preset}-{cfg.method}"
    return cfg


def default_out(args: argparse.Namespace, method: str) -> Path:
    """The run directory for a command creating a run."""
    return Path(args.out) if args.out else Path("runs") / f"{args.preset}-{method}"
