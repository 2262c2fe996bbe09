"""`deepobf`: thin command-line front end. Parse, call the library, print; nothing else lives here."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError
from .data import LOADERS, DataError, load_index
from .data.synth import render_synthetic_celeba
from .methods import METHODS, get_method, train_run
from .options import add_run_options, apply_run_options, build_config, default_out, refuse_changed_resume
from .registry import Registry
from .runs import RunError
from .training import format_summary
from .training.distributed import command_scope


# ------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """Train a run of the configured method: the preset's (`hardened` unless the preset names another), the paper's
    Algorithm 1 with ``--paper``, any registered method with ``--set method=NAME``."""
    if args.method_help:
        print(get_method(args.method_help).help())
        return 0
    method = "deepobfuscator" if args.paper else None
    cfg = build_config(args, method)
    out = default_out(args, cfg.method)
    refuse_changed_resume(args, out, lambda recorded: apply_run_options(recorded, args, method))
    summary = train_run(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary, out))
    return 0


# ------------------------------------------------------------------------- data
def cmd_data_synth(args: argparse.Namespace) -> int:
    """Render the embedded synthetic face set in the CelebA layout."""
    out = render_synthetic_celeba(Path(args.out), n_images=args.images, n_identities=args.identities,
                                  size=(args.height, args.width), seed=args.seed, progress=not args.no_progress)
    print(f"wrote {args.images} images in the CelebA layout to {out}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Read a dataset root and print its size and attribute base rates."""
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


QUICK_START = """quick start (the embedded synthetic faces; add --data DIR for a CelebA-layout folder):
  deepobf train --preset demo --out runs/demo   # train the default (hardened) defence, about a minute on 2 CPU cores
  deepobf attack runs/demo                      # fresh attackers on the frozen pipeline: the privacy numbers (7-9 minutes)
  deepobf inspect runs/demo                     # a page: what the phone sends, the cloud answers, an eavesdropper gets

`deepobf COMMAND -h` explains a command; docs/ in the repository has the details."""


def build_parser() -> argparse.ArgumentParser:
    """The full `deepobf` argument parser."""
    parser = argparse.ArgumentParser(
        prog="deepobf", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=QUICK_START,
        description="Train an on-device obfuscator whose features keep their intended use but defeat image "
                    "reconstruction and private-attribute inference; judge it with fresh attackers; deploy it.")
    parser.add_argument("--version", action="version", version=f"deepobfuscator {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    p = sub.add_parser("train", help="train an obfuscator (the hardened defence; --paper: the paper's method)",
                       description="Train an obfuscator: the hardened defence by default, the paper's DeepObfuscator "
                                   "with --paper, any method with --set method=NAME (see `deepobf baseline`).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="methods (--set method=NAME; default hardened, --paper = deepobfuscator):\n  "
                              + METHODS.describe().replace("\n", "\n  "))
    add_run_options(p)
    p.add_argument("--paper", action="store_true",
                   help="the paper's DeepObfuscator (Algorithm 1) instead of the default `hardened` defence, which "
                        "holds against attackers trained afresh where the paper's does not (docs/hardened.md)")
    p.add_argument("--defend", choices=["both", "reconstruction", "attributes", "none"],
                   help="which attacks to defend against (paper section 4.2 ablations)")
    p.add_argument("--method-help", metavar="METHOD", help="list a method's parameters (types, defaults, help) and exit")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (cuda if available); under torchrun use cuda or auto "
                        "(each process takes GPU LOCAL_RANK)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command")
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
    q.add_argument("--dataset", default="celeba", help=f"loader name ({', '.join(LOADERS)})")
    q.add_argument("--show", type=int, default=40)
    q.set_defaults(handler=cmd_data_check)

    for name in COMMAND_MODULES:  # each component's command.py adds its subcommands
        try:
            module = importlib.import_module(COMMAND_MODULES.get(name))
        except ImportError as exc:  # an optional component's dependency is missing
            print(f"deepobf: {name} commands unavailable ({exc})", file=sys.stderr)
            continue
        module.register_cli(sub)
    return parser


# Modules that define `register_cli(subparsers)`: each component keeps its small
# parse -> call -> print wrapper beside it, so cli.py stays a table of contents.
COMMAND_MODULES: Registry[str] = Registry("command module")
COMMAND_MODULES.add("attack", "deepobfuscator.attacks.command", "attack")
COMMAND_MODULES.add("experiments", "deepobfuscator.experiments.command", "baseline, sweep")
COMMAND_MODULES.add("report", "deepobfuscator.report.command", "report")
COMMAND_MODULES.add("deploy", "deepobfuscator.deploy.command", "export, bench-device, serve, client")
COMMAND_MODULES.add("inspect", "deepobfuscator.deploy.inspect_command", "inspect")
COMMAND_MODULES.add("text", "deepobfuscator.text.command", "text-train, text-check")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `deepobf`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `deepobf` alone: what there is and how to start
        parser.print_help()
        return 0
    if getattr(args, "handler", None) is None:  # a command group without its subcommand, e.g. `deepobf data`
        try:
            parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "-h"])
        except SystemExit:
            pass
        return 0
    try:
        with command_scope(args.command) as active:  # under torchrun: data-parallel or rank 0 only
            return int(args.handler(args) or 0) if active else 0
    except (ConfigError, DataError, RunError, FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"deepobf {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        how = ("rerun with --resume to continue" if hasattr(args, "resume")
               else "rerun the same command to continue (finished work is kept)")  # attack, sweep: resume by default
        print(f"deepobf {args.command}: interrupted; {how}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
