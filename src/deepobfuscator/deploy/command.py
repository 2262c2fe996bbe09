"""`deepobf export | bench-device | serve | client`: parse, call the deploy library, print."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_export(args: argparse.Namespace) -> int:
    """Export O and C, check parity, optionally quantise O to int8, write the model card."""
    from .export import export_run

    card = export_run(Path(args.run_dir), args.format, Path(args.out) if args.out else None, int8=args.int8,
                      parity_images=args.parity_images, tolerance=args.tolerance,
                      calibration_images=args.calibration_images)
    out = Path(args.out) if args.out else Path(args.run_dir) / "export" / args.format
    for name, entry in card["files"].items():
        print(f"{name:16s} {out / entry['path']}  ({entry['bytes'] / 1e6:.3f} MB)")
    for name in ("obfuscator", "classifier"):
        p = card["parity"][name]
        print(f"parity {name}: max |diff| {p['max_abs_diff']:.2e} on {p['images']} test images "
              f"(tolerance {card['parity']['tolerance']:g})")
    if "int8" in card:
        q = card["int8"]
        for variant, acc in q["accuracy"].items():
            delta = q["delta_vs_fp32"].get(variant)
            extra = "" if delta is None else "  delta " + ", ".join(f"{k} {v:+.4f}" for k, v in delta.items())
            print(f"C accuracy, {variant:18s}: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()) + extra)
    print(f"model card: {out / 'model-card.json'}")
    return 0


def cmd_bench_device(args: argparse.Namespace) -> int:
    """Table 6 analogue: size and batch-1 single-thread latency of O, fp32 and int8."""
    from .bench import bench_device, format_table

    result = bench_device(Path(args.run_dir), runs=args.runs, warmup=args.warmup, threads=args.threads,
                          paper=not args.no_paper, out=Path(args.out) if args.out else None)
    print(format_table(result))
    print(f"written: {args.out or Path(args.run_dir) / 'bench-device.json'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve C over HTTP until interrupted."""
    import uvicorn

    from .service import create_app, load_service_model

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_service_model(Path(args.run_dir), backend=args.backend,
                               onnx_path=Path(args.onnx) if args.onnx else None, threads=args.threads)
    app = create_app(model, max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_batch=args.max_batch)
    print(f"serving {model.name} ({model.backend}) on http://{args.host}:{args.port}  (OpenAPI: /docs, /openapi.json)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    """Run O locally, send features, print predictions."""
    from .client import run

    return run(args)


def register_cli(subparsers: Any) -> None:
    """Add the deployment subcommands."""
    p = subparsers.add_parser("export", help="export O and C (ONNX or TorchScript) with a parity check")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--int8", action="store_true", help="also quantise O to int8 (ONNX Runtime static, calibrated)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/export/FORMAT)")
    p.add_argument("--parity-images", type=int, default=32, help="real test images for the parity check")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed vs PyTorch (fp32)")
    p.add_argument("--calibration-images", type=int, default=64, help="training images calibrating int8")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser("bench-device", help="Table 6 on this machine: O's size and latency, fp32 and int8")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--runs", type=int, default=100, help="timed runs per model (>= 100 for reported figures)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--no-paper", action="store_true", help="skip the paper-scale 218x178 width-1.0 obfuscator")
    p.add_argument("--out", help="result JSON (default: RUN_DIR/bench-device.json)")
    p.set_defaults(handler=cmd_bench_device)

    p = subparsers.add_parser("serve", help="serve C over HTTP (POST /v1/predict, GET /healthz, GET /v1/model)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="run C from the run's weights (torch) or its exported classifier.onnx")
    p.add_argument("--onnx", help="classifier ONNX file for --backend onnx (default: RUN_DIR/export/onnx/classifier.onnx)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body accepted (MiB)")
    p.add_argument("--max-batch", type=int, default=256, help="largest batch accepted per request")
    p.add_argument("--threads", type=int, help="inference threads (torch and ONNX Runtime)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=cmd_serve)

    from .client import add_arguments

    p = subparsers.add_parser("client", help="run O locally (ONNX Runtime), send features, print predictions")
    add_arguments(p)
    p.set_defaults(handler=cmd_client)
