"""The phone half: run O with ONNX Runtime, send only the features to the service, print its predictions.

Imports numpy, PIL, onnxruntime and the standard library only (no torch), so it runs where the
training stack is absent: ``python -m deepobfuscator.deploy.client IMAGE... --obfuscator O.onnx --url URL``
(``deepobf client`` is the same command).
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..imaging import load_image  # the training resize, without torch
from .wire import TRANSPORTS, encode_features


class ClientError(ValueError):
    """A request the service refused or could not be reached for (message names the URL)."""


class LocalObfuscator:
    """O as an ONNX file: ``uint8 [N, H, W, 3]`` images -> float32 features."""

    def __init__(self, model: Path, threads: int | None = 1) -> None:
        from .sessions import open_session

        self.path = Path(model)
        self.session = open_session(self.path, threads=threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if len(inp.shape) != 4 or not all(isinstance(d, int) for d in inp.shape[1:]):
            raise ValueError(f"{self.path}: input {inp.name} has shape {inp.shape}; expected [batch, 3, H, W]")
        self.image_size = (int(inp.shape[2]), int(inp.shape[3]))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features for ``uint8 [N, H, W, 3]`` images (scaled to [0, 1] here; O normalises inside)."""
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        return self.session.run(None, {self.input_name: x})[0]


def predict_url(url: str) -> str:
    """The predict endpoint for a service base URL (or the endpoint itself)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1/predict") else url + "/v1/predict"


def post_features(url: str, body: bytes, content_type: str, timeout: float = 30.0) -> dict[str, Any]:
    """POST an encoded feature body; the service's JSON answer, or ClientError with its error message."""
    target = predict_url(url)
    request = urllib.request.Request(target, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = raw[:200].decode("utf-8", "replace")
        raise ClientError(f"{target}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ClientError(f"{target}: cannot reach the service: {getattr(exc, 'reason', exc)}") from None


@dataclass
class ClientResult:
    """One image's predictions and what each transport would cost on the wire."""

    image: Path
    image_bytes: int
    transport: str
    predictions: dict[str, Any]
    request_bytes: dict[str, int]


def classify_images(images: list[Path], obfuscator: Path, url: str, transport: str = "float32",
                    timeout: float = 30.0) -> list[ClientResult]:
    """Obfuscate each image locally, send its features with ``transport``, collect the answers."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r} (choose from {', '.join(TRANSPORTS)})")
    local = LocalObfuscator(obfuscator)
    results = []
    for path in map(Path, images):
        features = local(load_image(path, local.image_size)[None])[0]
        sizes = {t: len(encode_features(features, t)[0]) for t in TRANSPORTS}
        body, content_type = encode_features(features, transport)
        answer = post_features(url, body, content_type, timeout)
        results.append(ClientResult(path, path.stat().st_size, transport, answer["predictions"][0], sizes))
    return results


def format_results(results: list[ClientResult]) -> str:
    """Predictions and bytes per request (each transport) against the image file's own size."""
    lines = []
    for r in results:
        preds = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={[round(p, 3) for p in v]}"
                          for k, v in r.predictions.items())
        lines.append(f"{r.image}: {preds}  (sent {r.transport}, {r.request_bytes[r.transport]} B)")
        costs = ", ".join(f"{t} {n} B ({n / r.image_bytes:.2f}x)" for t, n in r.request_bytes.items())
        lines.append(f"  bytes per request: {costs}; image file {r.image_bytes} B")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The client's options (shared with `deepobf client`)."""
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--obfuscator", required=True, type=Path, help="O as ONNX (from deepobf export)")
    p.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--transport", choices=TRANSPORTS, default="float32",
                   help="feature encoding on the wire (int8: per-tensor affine; npy: .npy float32)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="print results as JSON")


def run(args: argparse.Namespace) -> int:
    """Classify ``args.images`` and print the results."""
    results = classify_images(args.images, args.obfuscator, args.url, args.transport, args.timeout)
    if args.json:
        print(json.dumps([{**r.__dict__, "image": str(r.image)} for r in results], indent=2))
    else:
        print(format_results(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m deepobfuscator.deploy.client``."""
    parser = argparse.ArgumentParser(prog="deepobfuscator.deploy.client", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"client: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
