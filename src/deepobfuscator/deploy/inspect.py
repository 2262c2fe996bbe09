"""`deepobf inspect`: one local web page showing, for an uploaded image and each run, what the phone sends,
what the cloud answers and what an eavesdropper recovers with the attackers `deepobf attack` saved.

``POST /v1/inspect`` takes the raw image bytes (JPEG, PNG, ...) and answers :class:`InspectResponse`;
``GET /`` is the page (HTML/JS/CSS shipped in ``deploy/static/inspect``, no CDN, no build step);
``GET /v1/runs`` describes the runs and ``GET /v1/examples/{i}`` serves faces drawn by the project's
synthetic renderer (never dataset images). Uploads have the same body limit and error body as `serve`.
Every run's pipeline is the one `deepobf attack` attacks (:func:`methods.load_trained` with the method's
transforms, then :func:`attacks.features.obfuscate`), fed by the same decoder and crop/resize as training
and the client.
"""
from __future__ import annotations

import base64
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..attacks.features import obfuscate
from ..attacks.saved import RunAttackers, load_attackers
from ..config import RunConfig
from ..data import images_to_tensor
from ..data.synth import render_synthetic_celeba
from ..imaging import ImageError, load_image
from ..losses import MSSSIMSettings, resolve_msssim
from ..methods import load_trained
from ..metrics import ms_ssim_per_image
from ..runs import RunDir, run_specs, spec_to_dict
from ..training.modules import Modules
from . import heads, wire
from .service import (DEFAULT_MAX_BODY, ErrorResponse, Predictor, add_error_handlers, read_limited_body,
                      torch_predictor)

STATIC = Path(__file__).resolve().parent / "static" / "inspect"
PAGE_FILES = {"inspect.js": "text/javascript", "inspect.css": "text/css"}
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff",
                       "application/octet-stream")
MAX_PIXELS = 50_000_000  # decoded size limit (a small compressed file can expand to gigabytes)
WIRE_DTYPES = ("float32", "float16", "int8")
MOSAIC_CHANNELS = 64
EXAMPLE_SIZE = (218, 178)  # CelebA's aligned size (H, W)


# ----------------------------------------------------------------------------------------- response schema
class AttributeProbability(BaseModel):
    """An attribute's probability: P(positive) for binary attributes, one per class otherwise."""

    name: str
    probability: float | list[float]
    classes: list[str] | None = None


class Sent(BaseModel):
    """What the phone sends for this image: a mosaic of O's feature channels, their shape and wire sizes."""

    shape: list[int]
    mosaic_png: str
    mosaic_channels: int
    bytes_per_request: dict[str, int]
    jpeg_bytes: int


class Reconstruction(BaseModel):
    """The best saved reconstructor's output for this image and its MS-SSIM to the image as the pipeline saw it."""

    attacker: str
    image_png: str
    ms_ssim: float
    test_ms_ssim: float | None
    test_ms_ssim_ci95: list[float | None] | None = None
    best_overall: str | None = None


class PrivateGuess(BaseModel):
    """The best saved attacker's guess for one private attribute, beside its measured rates on the test split.

    ``probability`` is read through the attacker's decision rule (its logits shifted by the offset it chose
    on its validation images), so above 0.5 (or the largest class) is the class the attacker guesses."""

    name: str
    attacker: str
    probability: float | list[float]
    classes: list[str] | None = None
    balanced_accuracy: float | None
    balanced_accuracy_ci95: list[float | None] | None = None
    majority_rate: float | None = None
    n: int | None = None
    averaged: dict[str, float | None] = {}  # best attacker's balanced accuracy with m queries averaged (m: "8", "inf")


class Eavesdropper(BaseModel):
    """What someone intercepting the features recovers with the run's saved attackers."""

    attacked: bool
    command: str
    note: str | None = None
    split: str | None = None
    reconstruction: Reconstruction | None = None
    attributes: list[PrivateGuess] = []


class RunInspection(BaseModel):
    """One run's view of the uploaded image."""

    run: str
    method: str
    image_size: list[int]
    input_png: str
    sent: Sent
    cloud: list[AttributeProbability]
    eavesdropper: Eavesdropper
    seconds: float


class UploadInfo(BaseModel):
    """The uploaded file as received."""

    filename: str | None
    bytes: int
    format: str
    width: int
    height: int


class InspectResponse(BaseModel):
    """Per run, side by side: the pipeline's input, what is sent, the cloud's answer, the eavesdropper's view."""

    upload: UploadInfo
    runs: list[RunInspection]
    seconds: float


# ----------------------------------------------------------------------------------------- one run
@dataclass
class InspectedRun:
    """A run loaded once at start-up: its deployed pipeline, C, and the attackers its latest attack saved."""

    path: Path
    name: str  # the run directory's name (copies of one run keep the config's name)
    cfg: RunConfig
    modules: Modules
    attributes: list[dict[str, Any]]  # intended attributes served by C
    private: dict[str, dict[str, Any]]  # private attributes by name
    msssim: MSSSIMSettings
    attackers: RunAttackers | None
    cloud: Predictor  # C as `serve` runs it

    @property
    def image_size(self) -> tuple[int, int]:
        """The pipeline's input size (H, W)."""
        return int(self.cfg.data.image_size[0]), int(self.cfg.data.image_size[1])

    @property
    def attack_command(self) -> str:
        """The command that attacks this run (saving its attackers)."""
        again = " --retrain" if self.attackers is not None and not self.attackers else ""
        return f"deepobf attack {self.path}{again}"

    def describe(self) -> dict[str, Any]:
        """What the page shows before any upload."""
        return {"run": self.name, "path": str(self.path), "method": self.cfg.method,
                "image_size": list(self.image_size), "attributes": [a["name"] for a in self.attributes],
                "private": list(self.private), "attacked": bool(self.attackers), "command": self.attack_command}


def load_inspected_run(run_dir: Path, device: str = "cpu") -> InspectedRun:
    """Load a trained run's deployed pipeline and its saved attackers."""
    run = RunDir(Path(run_dir))
    cfg, modules = load_trained(run, device)
    task_specs, private_specs = run_specs(cfg)
    return InspectedRun(run.path, run.path.resolve().name, cfg, modules, [spec_to_dict(s) for s in task_specs],
                        {s.name: spec_to_dict(s) for s in private_specs}, resolve_msssim(cfg.msssim, cfg.data.image_size),
                        load_attackers(run.path), torch_predictor(modules.classifier))


def png_data_url(pixels: np.ndarray) -> str:
    """A ``data:image/png;base64`` URL of ``uint8 [H, W]`` or ``[H, W, 3]`` pixels."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> int:
    """Size of ``uint8 [H, W, 3]`` pixels as a JPEG (the cost of sending the image itself)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.tell()


def feature_mosaic(features: np.ndarray, limit: int = MOSAIC_CHANNELS) -> tuple[np.ndarray, int]:
    """The first ``limit`` channels of ``[C, h, w]`` features tiled in a near-square grid, each channel scaled to
    its own min..max (uint8, 1-pixel gaps); returns the mosaic and the number of channels shown."""
    shown = features[:limit].astype(np.float32)
    n, h, w = shown.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), 255, dtype=np.uint8)
    for i, channel in enumerate(shown):
        lo, hi = float(channel.min()), float(channel.max())
        scaled = (channel - lo) / (hi - lo) if hi > lo else np.zeros_like(channel)
        r, c = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = np.round(scaled * 255).astype(np.uint8)
    return out, n


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return images[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def _probability(logits: torch.Tensor, attribute: dict[str, Any]) -> float | list[float]:
    return heads.per_image(logits.float().numpy(), [attribute])[0][attribute["name"]]


def _eavesdropper(run: InspectedRun, features: torch.Tensor, image: torch.Tensor) -> Eavesdropper:
    attackers = run.attackers
    if not attackers:
        note = ("Not attacked yet" if attackers is None else
                "Attacked before attackers were saved (or refitted since)")
        if attackers is not None and attackers.problems:
            note = f"{note}; unreadable: {'; '.join(attackers.problems)}"
        return Eavesdropper(attacked=False, command=run.attack_command, note=note)
    view = Eavesdropper(attacked=True, command=run.attack_command, split=attackers.split,
                        note=f"no saved weights for: {', '.join(attackers.unsaved)}" if attackers.unsaved else None)
    if attackers.reconstructors:
        best = attackers.reconstructors[0]
        recon = best.module(features).clamp(0, 1)
        view.reconstruction = Reconstruction(
            attacker=best.attacker, image_png=png_data_url(_to_uint8(recon)),
            ms_ssim=float(ms_ssim_per_image(recon, image, run.msssim)[0]), test_ms_ssim=best.metrics.get("ms_ssim"),
            test_ms_ssim_ci95=best.metrics.get("ms_ssim_ci95"), best_overall=attackers.best_reconstructor)
    for attribute, fitted in attackers.attributes.items():
        if not fitted:
            continue
        best = fitted[0]
        spec = run.private.get(attribute) or {"name": attribute, "num_classes": 2, "classes": None}
        # the attacker's own decision rule: the logit offset it chose on its validation images (issue 12)
        offset = (best.metrics.get("training") or {}).get("decision_offset") or [0.0]
        logits = best.module(features) - torch.tensor(offset, dtype=features.dtype)
        view.attributes.append(PrivateGuess(
            name=attribute, attacker=best.attacker, probability=_probability(logits, spec),
            classes=spec["classes"], balanced_accuracy=best.metrics.get("balanced_accuracy"),
            balanced_accuracy_ci95=best.metrics.get("balanced_accuracy_ci95"),
            majority_rate=best.metrics.get("majority_rate"), n=best.metrics.get("n"),
            averaged={m: (rep.get("privacy", {}).get(attribute) or {}).get("balanced_accuracy")
                      for m, rep in attackers.repeated.items()}))
    return view


@torch.inference_mode()
def inspect_pixels(run: InspectedRun, pixels: np.ndarray) -> RunInspection:
    """Everything the page shows for one run, given the image as this run's pipeline sees it (``uint8 [H, W, 3]``)."""
    started = time.perf_counter()
    image = images_to_tensor(np.array(pixels[None]))  # a writable copy: decoded images may be read-only
    features = obfuscate(run.cfg, run.modules, image).float()
    array = features[0].numpy()
    mosaic, shown = feature_mosaic(array)
    sizes = {dtype: len(wire.encode_tensor(array, dtype)) for dtype in WIRE_DTYPES}
    answer = heads.per_image(run.cloud(features.numpy()), run.attributes)[0]
    cloud = [AttributeProbability(name=a["name"], probability=answer[a["name"]], classes=a.get("classes"))
             for a in run.attributes]
    return RunInspection(
        run=run.name, method=run.cfg.method, image_size=list(run.image_size), input_png=png_data_url(pixels),
        sent=Sent(shape=list(array.shape), mosaic_png=png_data_url(mosaic), mosaic_channels=shown,
                  bytes_per_request=sizes, jpeg_bytes=jpeg_bytes(pixels)),
        cloud=cloud, eavesdropper=_eavesdropper(run, features, image),
        seconds=round(time.perf_counter() - started, 4))


# ----------------------------------------------------------------------------------------- uploads
def check_upload(body: bytes, filename: str | None = None) -> UploadInfo:
    """The upload's format and size, refusing empty bodies, non-images and images too large to decode (4xx)."""
    label = f"upload {filename!r}" if filename else "upload"
    if not body:
        raise wire.WireError(400, "empty_body", f"{label}: no image in the request body")
    try:
        with Image.open(io.BytesIO(body)) as img:
            width, height, fmt = img.width, img.height, img.format or "unknown"
    except Image.DecompressionBombError as exc:
        raise wire.WireError(413, "image_too_large", f"{label}: {exc}") from None
    except UnidentifiedImageError:
        raise wire.WireError(415, "not_an_image", f"{label}: not an image in a format this server reads "
                             "(JPEG, PNG, WebP, GIF, BMP, TIFF, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise wire.WireError(400, "corrupt_image", f"{label}: cannot read the image header (corrupt or truncated): "
                             f"{exc}") from None
    if width * height > MAX_PIXELS:
        raise wire.WireError(413, "image_too_large",
                             f"{label}: {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels")
    return UploadInfo(filename=filename, bytes=len(body), format=fmt, width=width, height=height)


def decode_upload(body: bytes, size: tuple[int, int], filename: str | None = None) -> np.ndarray:
    """The uploaded image as a pipeline of input ``size`` sees it (:func:`imaging.load_image`); 400 if corrupt."""
    try:
        return load_image(io.BytesIO(body), size)  # type: ignore[arg-type]  # PIL reads file objects too
    except ImageError as exc:
        reason = exc.__cause__ or exc
        label = f"upload {filename!r}" if filename else "upload"
        raise wire.WireError(400, "corrupt_image", f"{label}: cannot decode the image (corrupt or truncated): "
                             f"{reason}") from None


def inspect_upload(runs: list[InspectedRun], body: bytes, filename: str | None = None) -> InspectResponse:
    """Check and decode an uploaded image, then inspect it with every run."""
    started = time.perf_counter()
    upload = check_upload(body, filename)
    decoded: dict[tuple[int, int], np.ndarray] = {}
    results = []
    for run in runs:
        if run.image_size not in decoded:
            decoded[run.image_size] = decode_upload(body, run.image_size, filename)
        results.append(inspect_pixels(run, decoded[run.image_size]))
    return InspectResponse(upload=upload, runs=results, seconds=round(time.perf_counter() - started, 4))


def render_examples(count: int = 4, seed: int = 7) -> list[bytes]:
    """JPEG bytes of ``count`` faces drawn by the project's synthetic renderer (no dataset images)."""
    if count < 1:
        return []
    with tempfile.TemporaryDirectory(prefix="deepobf-inspect-") as tmp:
        root = render_synthetic_celeba(Path(tmp), n_images=count, n_identities=count, size=EXAMPLE_SIZE, seed=seed)
        return [path.read_bytes() for path in sorted((root / "img_align_celeba").glob("*.jpg"))]


# ----------------------------------------------------------------------------------------- the app
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image file's raw bytes (JPEG, PNG, WebP, ...); name it with the `filename` query parameter.",
        "content": {ctype: {"schema": {"type": "string", "format": "binary"}} for ctype in IMAGE_CONTENT_TYPES},
    }
}
_ERRORS = {
    400: {"model": ErrorResponse, "description": "empty body, or an image that cannot be decoded (corrupt, truncated)"},
    413: {"model": ErrorResponse, "description": "body larger than the configured maximum, or too many pixels"},
    415: {"model": ErrorResponse, "description": "Content-Type is not an image type, or the bytes are not an image"},
}


def create_app(runs: list[InspectedRun], max_body_bytes: int = DEFAULT_MAX_BODY,
               examples: list[bytes] | None = None) -> FastAPI:
    """The inspect page and its JSON endpoint for ``runs`` (shown side by side in this order)."""
    if not runs:
        raise ValueError("inspect needs at least one run")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be >= 1")
    from .. import __version__

    examples = list(examples or [])
    app = FastAPI(title="DeepObfuscator inspect", version=__version__,
                  description=(__doc__ or "") + f"\n\nRuns: {', '.join(r.name for r in runs)}.")
    add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name not in PAGE_FILES:
            raise wire.WireError(404, "not_found", f"no page file {name!r}")
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name])

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/runs", summary="the runs shown, their attributes and whether their attackers are saved")
    async def list_runs() -> dict[str, Any]:
        return {"runs": [r.describe() for r in runs], "examples": len(examples), "max_body_bytes": max_body_bytes}

    @app.get("/v1/examples/{index}", summary="a synthetic example face (JPEG)",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}})
    async def example(index: int) -> Response:
        if not 0 <= index < len(examples):
            raise wire.WireError(404, "not_found", f"no example {index} (there are {len(examples)})")
        return Response(examples[index], media_type="image/jpeg")

    @app.post("/v1/inspect", response_model=InspectResponse, responses=_ERRORS, openapi_extra=_UPLOAD_BODY,
              summary="what each run sends, what the cloud answers and what an eavesdropper recovers")
    async def inspect(request: Request, filename: str | None = None) -> InspectResponse:
        content_type = request.headers.get("content-type")
        if wire.media_type(content_type) not in IMAGE_CONTENT_TYPES:
            raise wire.WireError(415, "unsupported_media_type", f"Content-Type {content_type!r} not accepted "
                                 "(send the image bytes as image/jpeg, image/png, ... or application/octet-stream)")
        body = await read_limited_body(request, max_body_bytes)
        return await run_in_threadpool(inspect_upload, runs, body, filename)

    return app
