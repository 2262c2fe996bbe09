"""`deepobf inspect`: parse, load the runs, serve the inspect page until interrupted."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_inspect(args: argparse.Namespace) -> int:
    """Serve a local page showing what each run sends, what the cloud answers and what an eavesdropper recovers."""
    import torch
    import uvicorn

    from .inspect import create_app, load_inspected_run, render_examples

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [load_inspected_run(Path(path)) for path in args.run_dirs]
    app = create_app(runs, max_body_bytes=int(args.max_body_mb * 1024 * 1024), examples=render_examples(args.examples))
    for run in runs:
        state = "attackers saved" if run.attackers else f"not attacked yet: {run.attack_command}"
        print(f"  {run.name} ({run.cfg.method}, {run.path}): {state}")
    print(f"inspect page on http://{args.host}:{args.port}/  (OpenAPI: /docs, /openapi.json)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `deepobf inspect`."""
    p = subparsers.add_parser("inspect", help="local web page: what each run sends, the cloud answers and an "
                              "eavesdropper recovers for an image", description=cmd_inspect.__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="trained run directories, shown side by side")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest upload accepted (MiB)")
    p.add_argument("--examples", type=int, default=4, help="synthetic example faces offered on the page")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=cmd_inspect)
