"""Loopback load test of `deepobf serve` plus the Table 6 figures (O's size and latency, fp32 and int8).

    python benchmarks/deploy_load_test.py RUN_DIR [--requests 2000] [--concurrency 8] [--max-seconds 120]
    python benchmarks/deploy_load_test.py --quick          # trains a tiny run on ../shared/data/celeba

The service runs as its own process (`python -m deepobfuscator.cli serve`, torch backend, 1 thread);
requests carry O's features of real test images, cycled, and every answer is checked against the
in-process C (a wrong probability counts as an error). Reported: requests/s, p50/p99 latency, error
count (goal: zero), then `bench-device` rows. The request count and the wall time are both bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "celeba"


def tiny_run(data: Path, out: Path) -> Path:
    """Train the `tiny` preset on a real CelebA root (seconds)."""
    from deepobfuscator.config import preset
    from deepobfuscator.methods import train_run

    cfg = preset("tiny")
    cfg.data.root = str(data)
    cfg.data.max_images = 160
    train_run(cfg, out, progress=False)
    return out


def payloads(run: Path, transport: str, batch: int, count: int = 16) -> tuple[list[tuple[bytes, str]], list[np.ndarray]]:
    """Encoded feature bodies of real test images and the in-process C's probabilities for each."""
    import torch

    from deepobfuscator.data import images_to_tensor
    from deepobfuscator.deploy.wire import encode_features
    from deepobfuscator.losses import probabilities
    from deepobfuscator.methods import load_trained
    from deepobfuscator.runs import RunDir, open_run_data, run_specs

    cfg, modules = load_trained(RunDir(run))
    data, _ = open_run_data(RunDir(run), cfg, progress=False)
    idx = np.sort(data.split["test"])
    bodies, expected = [], []
    for i in range(count):
        rows = idx[np.arange(i * batch, (i + 1) * batch) % len(idx)]
        with torch.no_grad():
            feats = modules.obfuscator(images_to_tensor(np.asarray(data.images[np.sort(rows)])))
            probs = probabilities(modules.classifier(feats), run_specs(cfg)[0])[0]
        bodies.append(encode_features(feats.numpy(), transport))
        expected.append(probs.numpy())
    return bodies, expected


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int) -> subprocess.Popen:
    """`deepobf serve` in a child process; returns once /healthz answers."""
    proc = subprocess.Popen([sys.executable, "-m", "deepobfuscator.cli", "serve", str(run), "--port", str(port),
                             "--threads", "1", "--log-level", "warning"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"deepobf serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("deepobf serve did not become healthy within 120 s")


async def load(url: str, bodies: list[tuple[bytes, str]], expected: list[np.ndarray], requests: int,
               concurrency: int, max_seconds: float, tolerance: float) -> dict:
    """Send up to ``requests`` requests with ``concurrency`` in flight, stopping new ones after ``max_seconds``."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    start = time.perf_counter()
    deadline = start + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def fail(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                i = issued
                issued += 1
                body, ctype = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", content=body, headers={"Content-Type": ctype})
                except httpx.HTTPError as exc:
                    fail(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    fail(f"HTTP {r.status_code}")
                    continue
                got = np.array([p[next(iter(p))] for p in r.json()["predictions"]])
                if not np.allclose(got, expected[i % len(bodies)], atol=tolerance):
                    fail("wrong probabilities")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"requests": issued, "concurrency": concurrency, "seconds": elapsed, "requests_per_s": issued / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "errors": sum(errors.values()), "error_kinds": errors, "stopped_by_time": issued < requests}


def main(argv: list[str] | None = None) -> int:
    """Run the load test and the Table 6 benchmark; print both."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="trained run (default: train a tiny one on --data)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CelebA root for the tiny run")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 requests at concurrency 4, 20 latency runs")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop issuing requests after this long")
    p.add_argument("--transport", default="float32", choices=["float32", "float16", "int8", "npy"])
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--runs", type=int, default=100, help="latency runs per model for the Table 6 rows")
    p.add_argument("--no-paper", action="store_true", help="skip the 218x178 width-1.0 obfuscator rows")
    p.add_argument("--out", help="write all results as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency, args.runs = min(args.requests, 200), min(args.concurrency, 4), 20

    from deepobfuscator.deploy.bench import bench_device, format_table

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run_dir) if args.run_dir else tiny_run(Path(args.data), Path(tmp) / "tiny-run")
        bodies, expected = payloads(run, args.transport, args.batch)
        tolerance = 1e-5 if args.transport in ("float32", "npy") else 0.05
        port = free_port()
        server = start_server(run, port)
        try:
            result = asyncio.run(load(f"http://127.0.0.1:{port}", bodies, expected, args.requests, args.concurrency,
                                      args.max_seconds, tolerance))
        finally:
            server.terminate()
            server.wait(timeout=30)
        result.update(transport=args.transport, batch=args.batch, body_bytes=len(bodies[0][0]))
        print(f"load test: {result['requests']} requests ({args.transport}, batch {args.batch}, "
              f"{result['body_bytes']} B each) at concurrency {result['concurrency']} in {result['seconds']:.1f} s")
        print(f"  requests/s {result['requests_per_s']:.1f}   p50 {result['p50_ms']:.2f} ms   "
              f"p99 {result['p99_ms']:.2f} ms   errors {result['errors']} {result['error_kinds'] or ''}")
        table = bench_device(run, runs=args.runs, warmup=max(3, args.runs // 10), paper=not args.no_paper,
                             out=Path(tmp) / "bench-device.json")
        print(f"\nTable 6 analogue (batch 1, 1 thread, {os.cpu_count()} CPUs, {args.runs} runs):")
        print(format_table(table))
        if args.out:
            Path(args.out).write_text(json.dumps({"load": result, "table6": table}, indent=2) + "\n")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
