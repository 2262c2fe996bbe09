"""The cloud half: an HTTP service hosting C (FastAPI on uvicorn).

``POST /v1/predict`` takes O's features for one image ``[C, h, w]`` or a batch ``[N, C, h, w]`` as a
DOBF tensor or ``.npy`` body (see :mod:`deepobfuscator.deploy.wire`) and answers per-attribute
probabilities; ``GET /healthz`` and ``GET /v1/model`` (the model card) complete it. The body limit is
enforced from Content-Length before reading and again while streaming; every rejection is a 4xx with
``{"error": {"status", "code", "message"}}``. Request bodies are parsed, never unpickled.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import heads, wire

DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_BATCH = 256
Predictor = Callable[[np.ndarray], np.ndarray]  # features [N, C, h, w] float32 -> logits [N, outputs]


class ErrorBody(BaseModel):
    """What was wrong with a request."""

    status: int
    code: str
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer."""

    error: ErrorBody


class PredictResponse(BaseModel):
    """Per-image probabilities: a float P(positive) per binary attribute, a list over classes otherwise."""

    model: str
    batch: int
    wire_dtype: str
    attributes: list[str]
    predictions: list[dict[str, float | list[float]]]


class Health(BaseModel):
    """Liveness answer."""

    status: str
    model: str


@dataclass
class ServiceModel:
    """C behind the service: a logits function, the attributes it serves, its feature shape and card."""

    predictor: Predictor
    attributes: list[dict[str, Any]]
    feature_shape: list[int]
    card: dict[str, Any]
    name: str = "deepobfuscator"
    backend: str = "torch"

    def predict(self, features: np.ndarray) -> list[dict[str, float | list[float]]]:
        """Per-image probability dicts for checked ``[N, C, h, w]`` features."""
        return heads.per_image(self.predictor(features), self.attributes)


def torch_predictor(classifier: Any) -> Predictor:
    """Run a PyTorch C (eval mode) under ``torch.inference_mode``."""
    import torch

    classifier.eval()

    def predict(features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return classifier(torch.from_numpy(np.ascontiguousarray(features))).numpy()
    return predict


def onnx_predictor(path: Path, threads: int | None = None) -> Predictor:
    """Run an exported ``classifier.onnx`` with ONNX Runtime."""
    from .sessions import open_session, run_session

    session = open_session(path, threads=threads)
    return lambda features: run_session(session, features)


def load_service_model(run_dir: Path, backend: str = "torch", onnx_path: Path | None = None,
                       threads: int | None = None) -> ServiceModel:
    """C of a trained run with its model card; ``backend`` torch (the run's weights) or onnx (exported file)."""
    from ..methods import load_trained
    from ..runs import RunDir, run_specs, spec_to_dict
    from .card import CARD_NAME, build_model_card, feature_shape_of

    run = RunDir(Path(run_dir))
    cfg = run.read_config()
    task_specs, _ = run_specs(cfg)
    card = build_model_card(run, cfg)
    if backend == "torch":
        _, modules = load_trained(run, cfg=cfg)
        predictor = torch_predictor(modules.classifier)
    elif backend == "onnx":
        path = Path(onnx_path) if onnx_path else run.path / "export" / "onnx" / "classifier.onnx"
        predictor = onnx_predictor(path, threads)
        exported_card = path.parent / CARD_NAME
        if exported_card.is_file():  # the export's card also lists files, parity and int8 results
            card = json.loads(exported_card.read_text())
    else:
        raise ValueError(f"unknown backend {backend!r} (torch or onnx)")
    return ServiceModel(predictor, [spec_to_dict(s) for s in task_specs], feature_shape_of(cfg), card,
                        name=cfg.name, backend=backend)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "code": code, "message": message}}, status_code=status)


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as Content-Length or the bytes received exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise wire.WireError(400, "bad_content_length", f"Content-Length {declared!r} is not a byte count")
        if int(declared) > limit:
            raise wire.WireError(413, "body_too_large", f"body of {int(declared)} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise wire.WireError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
    return bytes(body)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every refusal (:class:`wire.WireError`, unknown route, unexpected failure) as ``ErrorResponse``."""

    @app.exception_handler(wire.WireError)
    async def _wire_error(_: Request, exc: wire.WireError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal", f"{type(exc).__name__}: {exc}")


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": ("O's features for one image [C, h, w] or a batch [N, C, h, w]. "
                        "application/x-deepobf-tensor: 16-byte little-endian header (magic 'DOBF', version 1, "
                        "dtype code 1 float32 / 2 float16 / 3 int8, ndim, flags 0, float32 scale, int32 "
                        "zero_point), ndim uint32 dims, then raw C-order data; int8 values mean "
                        "scale * (q - zero_point). application/x-npy: a float16/float32 .npy file "
                        "(format 1.0/2.0; never unpickled)."),
        "content": {wire.TENSOR_CONTENT_TYPE: _BINARY, wire.NPY_CONTENT_TYPE: _BINARY},
    }
}
_ERRORS = {
    400: {"model": ErrorResponse, "description": "malformed body: bad magic/version/header, truncated, trailing bytes"},
    413: {"model": ErrorResponse, "description": "body larger than the configured maximum"},
    415: {"model": ErrorResponse, "description": "Content-Type is neither DOBF tensor nor .npy"},
    422: {"model": ErrorResponse, "description": "wrong dtype or shape, batch too large, NaN or infinity"},
}


def create_app(model: ServiceModel, max_body_bytes: int = DEFAULT_MAX_BODY,
               max_batch: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """The FastAPI application serving ``model``."""
    if max_body_bytes < wire.HEADER_SIZE or max_batch < 1:
        raise ValueError(f"max_body_bytes must be >= {wire.HEADER_SIZE} and max_batch >= 1")
    from .. import __version__

    app = FastAPI(title="DeepObfuscator cloud classifier", version=__version__,
                  description=(wire.__doc__ or "") + f"\n\nServing `{model.name}` "
                  f"(features {model.feature_shape}, attributes {[a['name'] for a in model.attributes]}).")
    card = {**model.card, "service": {"backend": model.backend, "max_body_bytes": max_body_bytes,
                                      "max_batch": max_batch, "feature_shape": model.feature_shape,
                                      "content_types": list(wire.CONTENT_TYPES)}}
    names = [a["name"] for a in model.attributes]
    add_error_handlers(app)

    @app.get("/healthz", response_model=Health, summary="liveness")
    async def healthz() -> Health:
        return Health(status="ok", model=model.name)

    @app.get("/v1/model", summary="the model card: input, features, attributes served, provenance")
    async def model_card() -> dict[str, Any]:
        return card

    @app.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_PREDICT_BODY,
              summary="per-attribute probabilities for obfuscated features")
    async def predict(request: Request) -> PredictResponse:
        content_type = request.headers.get("content-type")
        if wire.media_type(content_type) not in wire.CONTENT_TYPES:
            raise wire.WireError(415, "unsupported_media_type", f"Content-Type {content_type!r} not accepted "
                                 f"(use {' or '.join(wire.CONTENT_TYPES)})")
        body = await read_limited_body(request, max_body_bytes)
        tensor = wire.decode_body(body, content_type)
        features = wire.check_features(tensor.array, model.feature_shape, max_batch)
        rows = await run_in_threadpool(model.predict, features)
        return PredictResponse(model=model.name, batch=len(rows), wire_dtype=tensor.wire_dtype, attributes=names,
                               predictions=rows)

    return app


class BackgroundServer:
    """Run an app with uvicorn on a loopback port in a daemon thread (tests, load tests): ``with ... as url``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
