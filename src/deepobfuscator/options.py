"""Command-line options shared by the commands that create a run (`train`, `baseline`), and the config
they resolve to. Lives below every layer so each component's ``command.py`` can use it."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from .config import PRESETS, ConfigError, RunConfig, apply_overrides, load_config, preset
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
    cfg = apply_run_options(preset(args.preset), args, method)
    cfg.name = Path(args.out).name if args.out else f"{args.preset}-{cfg.method}"
    return cfg


def apply_run_options(cfg: RunConfig, args: argparse.Namespace, method: str | None = None) -> RunConfig:
    """``cfg`` with the options given on the command line (everything but ``--preset``) applied."""
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
    for key in ("epsilon", "sigma", "weight"):  # `deepobf baseline` shortcuts for method parameters (win over --set)
        if getattr(args, key, None) is not None:
            cfg.params[key] = getattr(args, key)
    return cfg


def refuse_changed_resume(args: argparse.Namespace, out: Path, apply: Callable[[Any], Any],
                          load: Callable[[Path], Any] = load_config) -> None:
    """``--resume`` continues a run as its config.yaml records it: options given with it that would change that
    config are refused, named with both values (they were once dropped without a word). ``apply`` puts the command
    line's options on a config (:func:`apply_run_options` with the command's method; text runs their own), ``load``
    reads one (image or text runs)."""
    path = Path(out) / "config.yaml"
    if not (getattr(args, "resume", False) and path.is_file()):
        return
    recorded, given = load(path).to_dict(), apply(load(path)).to_dict()
    changed = [f"{key} (recorded {old!r}, given {new!r})"
               for key, old, new in _differences(recorded, given) if key != "name"]
    if changed:
        raise ConfigError(f"--resume continues {out} as its config.yaml records it; these options would change it: "
                          f"{'; '.join(changed)}. Drop them, or train a new run into another --out")


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def default_out(args: argparse.Namespace, method: str) -> Path:
    """The run directory for a command creating a run."""
    return Path(args.out) if args.out else Path("runs") / f"{args.preset}-{method}"
