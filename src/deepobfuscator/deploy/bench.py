"""The paper's Table 6 on this machine: O's file size and per-image latency (batch 1, 1 thread), fp32 and int8.

Rows: the run's trained O at the run's input size, and the paper-scale O (width 1.0, 218x178, random
weights: latency and size only). Latencies are p50/p95 over ``runs`` timed calls after ``warmup``
untimed ones, with ONNX Runtime restricted to one intra-op thread and sequential execution.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..models.bottleneck import code_head_name
from ..runs import RunDir
from ..utils import atomic_write_json
from .sessions import open_session, run_session

PAPER_SIZE = (218, 178)
PAPER_WIDTH = 1.0
BENCH_NAME = "bench-device.json"


def measure_latency(model: Path, image: np.ndarray, runs: int = 100, warmup: int = 10,
                    threads: int = 1) -> dict[str, Any]:
    """Size and p50/p95/mean latency (ms) of one ONNX model on ``image [1, 3, H, W]``."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    session = open_session(model, threads=threads)
    for _ in range(warmup):
        run_session(session, image)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run_session(session, image)
        times[i] = time.perf_counter() - start
    ms = times * 1000.0
    return {"file": str(model), "size_mb": Path(model).stat().st_size / 1e6, "input": list(image.shape),
            "runs": int(runs), "warmup": int(warmup), "threads": int(threads),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean())}


def paper_obfuscator(out: Path, image_size: tuple[int, int] = PAPER_SIZE, width: float = PAPER_WIDTH,
                     calibration: int = 4, seed: int = 0, cfg: RunConfig | None = None) -> dict[str, Path]:
    """Export a randomly initialised O (default: width 1.0 at 218x178) as fp32 and int8 ONNX into ``out``; with a
    run's ``cfg``, the run's whole on-device module at that width and size (its noisy bottleneck and code head, the
    deterministic part: the noise adds one elementwise op), so a run that moves C's architecture to the phone
    (``model.bottleneck_code_head: vgg``) is measured with it."""
    import torch

    from ..models import build_obfuscator
    from ..models.bottleneck import deterministic
    from ..training.modules import run_obfuscator
    from .export import export_onnx
    from .quantize import quantize_static_onnx

    torch.manual_seed(seed)
    model = (run_obfuscator(cfg, width, tuple(image_size)) if cfg is not None else build_obfuscator(width)).eval()
    example = torch.rand(1, 3, *image_size)
    Path(out).mkdir(parents=True, exist_ok=True)
    paths = {"fp32": Path(out) / "paper-obfuscator.onnx", "int8": Path(out) / "paper-obfuscator.int8.onnx"}
    with deterministic(model):
        export_onnx(model, example, paths["fp32"], "images", "features")
    rng = np.random.default_rng(seed)
    quantize_static_onnx(paths["fp32"], paths["int8"],
                         [rng.random((1, 3, *image_size), dtype=np.float32) for _ in range(calibration)])
    return paths


def bench_device(run_dir: Path, runs: int = 100, warmup: int = 10, threads: int = 1, paper: bool = True,
                 paper_size: tuple[int, int] = PAPER_SIZE, out: Path | None = None) -> dict[str, Any]:
    """Table 6 rows for the run's O (exported with int8 if needed) and the paper-scale O; written to ``out``."""
    import onnxruntime

    run = RunDir(Path(run_dir))
    export_dir = run.path / "export" / "onnx"
    fp32, int8 = export_dir / "obfuscator.onnx", export_dir / "obfuscator.int8.onnx"
    if not (fp32.is_file() and int8.is_file() and (export_dir / "model-card.json").is_file()):
        from .export import export_run

        export_run(run.path, "onnx", export_dir, int8=True)
    cfg = run.read_config()
    height, width = (int(d) for d in cfg.data.image_size)
    image = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    rows = []
    for precision, path in (("fp32", fp32), ("int8", int8)):
        rows.append({"model": f"run obfuscator (width {cfg.model.width:g})", "precision": precision,
                     "image_size": [height, width], **measure_latency(path, image, runs, warmup, threads)})
    if paper:
        with tempfile.TemporaryDirectory() as tmp:
            paths = paper_obfuscator(Path(tmp), tuple(paper_size), cfg=cfg)
            image = np.random.default_rng(0).random((1, 3, *paper_size), dtype=np.float32)
            what = (f"the run's bottleneck, {code_head_name(cfg.model.bottleneck_code_head)} code head, "
                    if cfg.model.bottleneck_channels and cfg.model.bottleneck_code else
                    "the run's bottleneck, " if cfg.model.bottleneck_channels else "")
            for precision, path in paths.items():
                row = measure_latency(path, image, runs, warmup, threads)
                row["file"] = f"(temporary) {path.name}"
                rows.append({"model": f"paper obfuscator (width {PAPER_WIDTH:g}, {what}random weights)",
                             "precision": precision, "image_size": list(paper_size), **row})
    result = {"run": str(run.path), "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                                  "cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__},
              "batch": 1, "rows": rows}
    atomic_write_json(Path(out) if out else run.path / BENCH_NAME, result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table (Table 6 layout)."""
    lines = ["| model | precision | input | size (MB) | p50 (ms) | p95 (ms) | runs |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['precision']} | {r['image_size'][0]}x{r['image_size'][1]} | "
                     f"{r['size_mb']:.3f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['runs']} |")
    return "\n".join(lines)
