"""`deepobf`: thin command-line front end. Parse, call the library, print; nothing else lives here."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from . import __version__

Handler = Callable[[argparse.Namespace], int]
HANDLERS: dict[str, Handler] = {}


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by commands that create a run from a preset."""
    p.add_argument("--preset", default="demo", help="configuration preset (demo, celeba-cpu, celeba-paper, ...)")
    p.add_argument("--data", help="dataset root in its official layout (default: the embedded synthetic faces)")
    p.add_argument("--dataset", help="dataset loader name (celeba, lfw, statefarm, ...)")
    p.add_argument("--task", type=_csv, help="intended attributes, comma-separated (e.g. Smiling,High_Cheekbones)")
    p.add_argument("--private", type=_csv, help="private attributes, comma-separated (e.g. Male,Heavy_Makeup)")
    p.add_argument("--out", help="run directory (default: runs/<preset>-<method>)")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set train.lr=1e-4 --set privacy.lambda1=5 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_config(args: argparse.Namespace, method: str = "deepobfuscator") -> Any:
    """Preset + CLI options + --set overrides -> RunConfig."""
    from .config import apply_overrides, preset

    cfg = preset(args.preset)
    cfg.method = method
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
    cfg.name = Path(args.out).name if args.out else f"{args.preset}-{method}"
    return cfg


def default_out(args: argparse.Namespace, method: str) -> Path:
    """The run directory for a command creating a run."""
    return Path(args.out) if args.out else Path("runs") / f"{args.preset}-{method}"


# ------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """Train a DeepObfuscator run (Algorithm 1)."""
    from .training import train_run

    cfg = build_config(args)
    out = default_out(args, "deepobfuscator")
    summary = train_run(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {out}")
    return 0


# ------------------------------------------------------------------------- data
def cmd_data_synth(args: argparse.Namespace) -> int:
    """Render the embedded synthetic face set in the CelebA layout."""
    from .data.synth import render_synthetic_celeba

    out = render_synthetic_celeba(Path(args.out), n_images=args.images, n_identities=args.identities,
                                  size=(args.height, args.width), seed=args.seed, progress=not args.no_progress)
    print(f"wrote {args.images} images in the CelebA layout to {out}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Read a dataset root and print its size and attribute base rates."""
    from .data import load_index

    index = load_index(args.dataset, args.root)
    print(f"{index.name}: {len(index)} images at {index.root}")
    for name, values in list(index.labels.items())[: args.show]:
        print(f"  {name:24s} positive rate {values.mean():.3f}" if index.specs[name].binary
              else f"  {name:24s} {index.specs[name].num_classes} classes")
    if index.identities is not None:
        print(f"  identities: {len(set(index.identities.tolist()))}")
    print(f"  official partition: {'yes' if index.partition is not None else 'no (a seeded split will be made)'}")
    for note in index.notes:
        print(f"  note: {note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full `deepobf` argument parser."""
    parser = argparse.ArgumentParser(prog="deepobf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"deepobfuscator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an obfuscator with privacy-preserving adversarial learning")
    add_run_options(p)
    p.add_argument("--defend", choices=["both", "reconstruction", "attributes", "none"],
                   help="which attacks to defend against (paper section 4.2 ablations)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (cuda if available); under torchrun use cuda or auto "
                        "(each process takes GPU LOCAL_RANK)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("synth", help="render the embedded synthetic face set (CelebA layout)")
    q.add_argument("--out", required=True)
    q.add_argument("--images", type=int, default=4000)
    q.add_argument("--identities", type=int, default=400)
    q.add_argument("--height", type=int, default=109)
    q.add_argument("--width", type=int, default=89)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(handler=cmd_data_synth)
    q = dsub.add_parser("check", help="read a dataset root and summarise it")
    q.add_argument("root")
    q.add_argument("--dataset", default="celeba")
    q.add_argument("--show", type=int, default=40)
    q.set_defaults(handler=cmd_data_check)

    # further subcommands register here (see register_commands)
    for register in COMMAND_REGISTRARS:
        register(sub)
    return parser


# Each entry adds one or more subcommands: fn(subparsers) -> None.
COMMAND_REGISTRARS: list[Callable[[Any], None]] = []


def _load_registrars() -> None:
    """Import the modules that contribute subcommands (attack, baseline, sweep, report, deploy...)."""
    import importlib

    for mod in CLI_MODULES:
        try:
            module = importlib.import_module(mod)
        except ImportError as exc:  # an optional component's dependency is missing
            print(f"deepobf: {mod} unavailable ({exc})", file=sys.stderr)
            continue
        registrar = getattr(module, "register_cli", None)
        if registrar and registrar not in COMMAND_REGISTRARS:
            COMMAND_REGISTRARS.append(registrar)


# Modules that define `register_cli(subparsers)`: each component keeps its small
# parse -> call -> print wrapper beside it, so cli.py stays a table of contents.
CLI_MODULES: list[str] = [
    "deepobfuscator.attacks.command",    # attack
    "deepobfuscator.baselines.command",  # baseline, sweep
    "deepobfuscator.report.command",     # report
    "deepobfuscator.deploy.command",     # export, bench-device, serve, client
    "deepobfuscator.deploy.inspect_command",  # inspect
    "deepobfuscator.text.command",       # text-train, text-check
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `deepobf`."""
    _load_registrars()
    parser = build_parser()
    args = parser.parse_args(argv)
    from .config import ConfigError
    from .data import DataError
    from .runs import RunError
    from .training.distributed import command_scope

    try:
        with command_scope(args.command) as active:  # under torchrun: data-parallel or rank 0 only
            return int(args.handler(args) or 0) if active else 0
    except (ConfigError, DataError, RunError, FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"deepobf {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepobf {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
