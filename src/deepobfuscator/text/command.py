"""`deepobf text-train` and `deepobf text-check`: parse, call the text library, print."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import add_output_options, csv_list, refuse_changed_resume

if TYPE_CHECKING:
    from .config import TextRunConfig


def cmd_text_train(args: argparse.Namespace) -> int:
    """Train a text DeepObfuscator run (LSTM modules, no reconstruction terms)."""
    from .config import load_text_config, text_preset
    from .train import train_text

    cfg = apply_text_options(text_preset(args.preset), args)
    out = Path(args.out) if args.out else Path("runs") / f"{args.preset}-{cfg.privacy.defend}"
    cfg.name = out.name
    refuse_changed_resume(args, out, lambda recorded: apply_text_options(recorded, args), load_text_config)
    summary = train_text(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {out}")
    return 0


def apply_text_options(cfg: TextRunConfig, args: argparse.Namespace) -> TextRunConfig:
    """``cfg`` with the options given on the command line (everything but ``--preset``) applied."""
    from .config import apply_text_overrides

    if args.data:
        cfg.data.root = str(Path(args.data).expanduser().resolve())
    if args.task:
        cfg.data.task = args.task
    if args.private:
        cfg.data.private = args.private
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.defend:
        cfg.privacy.defend = args.defend
    return apply_text_overrides(cfg, args.overrides)


def cmd_text_check(args: argparse.Namespace) -> int:
    """Read a text data root and print its size, label columns, class rates and vocabulary size."""
    from .data import Vocabulary, load_text, tokenize

    corpus = load_text(args.root)
    print(f"text: {len(corpus)} examples from {', '.join(str(p) for p in corpus.source_files)}")
    for name, spec in corpus.specs.items():
        counts = [int((corpus.labels[name] == i).sum()) for i in range(spec.num_classes)]
        rates = ", ".join(f"{c}={n / len(corpus):.3f}" for c, n in zip(spec.classes or (), counts))
        print(f"  {name:16s} {spec.num_classes} classes: {rates}")
    tokens = [tokenize(t) for t in corpus.texts]
    vocab = Vocabulary.build(tokens, min_freq=args.min_freq)
    print(f"  tokens per example: mean {sum(map(len, tokens)) / len(tokens):.1f}, max {max(map(len, tokens))}; "
          f"vocabulary (min_freq {args.min_freq}): {len(vocab)}")
    print(f"  official split: {'yes' if corpus.partition is not None else 'no (a seeded split will be made)'}")
    return 0


def register_cli(sub: Any) -> None:
    """Add the text subcommands to `deepobf`."""
    p = sub.add_parser("text-train", help="train a text obfuscator (LSTM, paper section 5.2)")
    p.add_argument("--preset", default="text-cpu", help="text-cpu, text-paper or text-tiny")
    p.add_argument("--data", help="a .tsv file, or a folder with data.tsv or train/dev/test.tsv (see docs/text.md)")
    p.add_argument("--task", type=csv_list, help="intended label columns, comma-separated (default: mention)")
    p.add_argument("--private", type=csv_list, help="private label columns, comma-separated (default: dialect)")
    p.add_argument("--defend", choices=["attributes", "none"], help="attributes: DeepObfuscator; none: no defence")
    add_output_options(p, "runs/<preset>-<defend>", "--set model.hidden=128 --set privacy.lambda1=2")
    p.set_defaults(handler=cmd_text_train)
    p = sub.add_parser("text-check", help="read a text data root and summarise it")
    p.add_argument("root")
    p.add_argument("--min-freq", type=int, default=2)
    p.set_defaults(handler=cmd_text_check)
