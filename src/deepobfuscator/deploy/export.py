"""Export a trained run's O (phone half) and C (cloud half) with a dynamic batch size, checked for parity.

ONNX export deliberately uses the legacy TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``, opset 17): since torch 2.9 the default is the torch.export-based exporter, which
needs ``onnxscript``, not a dependency of this project. The legacy path traces the module, folds
batch norm into the convolutions and marks dimension 0 dynamic; its DeprecationWarning is silenced
here and the result is trusted only after :func:`check_parity` on real test images (fp32 max
absolute difference <= 1e-4 at batch 1 and at a full batch, for both O and C). TorchScript export
uses ``torch.jit.trace`` with the same check.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..attacks.features import obfuscate
from ..config import RunConfig
from ..methods import load_trained
from ..models.bottleneck import bottleneck_of, deterministic
from ..runs import RunDir, open_run_data
from ..utils import atomic_write_json
from .card import CARD_NAME, build_model_card, file_entry
from .stochastic import append_onnx_noise, check_noise

OPSET = 17
PARITY_TOLERANCE = 1e-4
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
Runner = Callable[[np.ndarray], np.ndarray]


class ParityError(ValueError):
    """An exported model does not reproduce PyTorch within tolerance."""


def reference_obfuscate(cfg: RunConfig, modules: Any, images: torch.Tensor) -> torch.Tensor:
    """The deployed pipeline's features in PyTorch (the same function the attacks use), without gradients."""
    with torch.no_grad():
        return obfuscate(cfg, modules, images)


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """Write ``module`` as ONNX (legacy exporter, dynamic batch) and validate it with ``onnx.checker``."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[output_name], do_constant_folding=True,
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    onnx.checker.check_model(str(path))


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write ``module`` as a traced TorchScript archive (batch size stays free for conv/linear nets)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path))


def load_runner(path: Path, fmt: str) -> Runner:
    """A numpy-in, numpy-out function running an exported file."""
    if fmt == "onnx":
        from .sessions import open_session, run_session

        session = open_session(path)
        return lambda x: run_session(session, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path)).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return run


def check_parity(path: Path, runner: Runner, inputs: np.ndarray, reference: np.ndarray,
                 tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Max abs difference of ``runner`` vs ``reference`` at batch 1 and the full batch; ParityError above tolerance."""
    full = runner(inputs)
    single = runner(inputs[:1])
    if full.shape != reference.shape or single.shape != reference[:1].shape:
        raise ParityError(f"{path}: output shape {list(full.shape)} differs from PyTorch's {list(reference.shape)}")
    diff = float(max(np.abs(full - reference).max(), np.abs(single - reference[:1]).max()))
    if not diff <= tolerance:
        raise ParityError(f"{path}: exported model differs from PyTorch by {diff:.3g} (max abs) on {len(inputs)} "
                          f"real test images; tolerance {tolerance:g}")
    return {"max_abs_diff": diff, "images": int(len(inputs)), "batch_sizes": [1, int(len(inputs))]}


def export_run(run_dir: Path, fmt: str = "onnx", out: Path | None = None, int8: bool = False,
               parity_images: int = 32, tolerance: float = PARITY_TOLERANCE, calibration_images: int = 64,
               eval_images: int | None = None) -> dict[str, Any]:
    """Export O and C of ``run_dir`` into ``out`` (default ``RUN/export/<fmt>``); returns the written model card."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (onnx or torchscript)")
    if int8 and fmt != "onnx":
        raise ValueError("--int8 quantises with ONNX Runtime; use it with --format onnx")
    if parity_images < 1 or tolerance < 0 or calibration_images < 1:
        raise ValueError("parity_images and calibration_images must be >= 1 and tolerance >= 0")
    run = RunDir(Path(run_dir))
    cfg, modules = load_trained(run)
    data, _ = open_run_data(run, cfg, progress=False)
    out = Path(out) if out else run.path / "export" / fmt
    out.mkdir(parents=True, exist_ok=True)
    (out / CARD_NAME).unlink(missing_ok=True)  # a card only ever describes files that passed parity

    from ..data import images_to_tensor

    images = images_to_tensor(np.asarray(data.images[np.sort(data.split["test"][:parity_images])]))
    features = reference_obfuscate(cfg, modules, images)
    noisy = bottleneck_of(modules.obfuscator)
    with torch.no_grad():
        logits = modules.classifier(features)
    suffix = FORMATS[fmt]
    paths = {"obfuscator": out / f"obfuscator{suffix}", "classifier": out / f"classifier{suffix}"}
    parity: dict[str, Any] = {"tolerance": tolerance, "split": "test"}
    for name, module, x, ref, names in (("obfuscator", modules.obfuscator, images, features, ("images", "features")),
                                        ("classifier", modules.classifier, features, logits, ("features", "logits"))):
        if name == "obfuscator" and noisy is not None:  # parity of the deterministic part, then the noise
            with deterministic(module), torch.no_grad():
                ref = module(x)
                _export(fmt, module, x, paths[name], names)
            parity[name] = {**check_parity(paths[name], load_runner(paths[name], fmt), x.numpy(), ref.numpy(),
                                           tolerance), "part": "deterministic (bottleneck noise off)"}
            if int8:  # int8 quantises the deterministic part; the noise is appended afterwards
                paths["obfuscator_mean"] = out / f"obfuscator.mean{suffix}"
                paths[name].replace(paths["obfuscator_mean"])
            _export(fmt, module, x, paths[name], names)
            parity["obfuscator_noise"] = check_noise(load_runner(paths[name], fmt), x.numpy(), ref.numpy(),
                                                     noisy.sigma.detach().cpu().numpy())
            continue
        _export(fmt, module, x, paths[name], names)
        try:
            parity[name] = check_parity(paths[name], load_runner(paths[name], fmt), x.numpy(), ref.numpy(), tolerance)
        except ParityError as exc:
            if name == "obfuscator" and cfg.method != "deepobfuscator":
                raise ParityError(f"{exc} (method '{cfg.method}' may transform images or features outside O; "
                                  "the exported file holds O alone)") from None
            raise

    card = build_model_card(run, cfg)
    card["export"] = {"format": fmt, "dynamic_axes": {"batch": 0},
                      "exporter": ("torch.onnx.export(dynamo=False), legacy TorchScript-based, opset %d" % OPSET
                                   if fmt == "onnx" else "torch.jit.trace"),
                      "torch": torch.__version__}
    if int8:
        sigma = noisy.sigma.detach().cpu().numpy() if noisy is not None else None
        card["int8"] = _export_int8(out, paths, data, calibration_images, eval_images, card["attributes"], sigma)
        paths["obfuscator_int8"] = out / "obfuscator.int8.onnx"
        if sigma is not None:
            parity["obfuscator_int8_noise"] = card["int8"].pop("noise")
            paths.pop("obfuscator_mean").unlink()  # the int8 file and the fp32 noisy file are what ships
    card["files"] = {k: file_entry(p, out) for k, p in paths.items()}
    card["parity"] = parity
    atomic_write_json(out / CARD_NAME, card)
    return card


def _export(fmt: str, module: nn.Module, x: torch.Tensor, path: Path, names: tuple[str, str]) -> None:
    """Write ``module`` in ``fmt`` (example batch: the first two of ``x``)."""
    if fmt == "onnx":
        export_onnx(module, x[:2], path, *names)
    else:
        export_torchscript(module, x[:2], path)


def _export_int8(out: Path, paths: dict[str, Path], data: Any, calibration_images: int, eval_images: int | None,
                 attributes: list[dict], sigma: np.ndarray | None = None) -> dict[str, Any]:
    """Quantise O on training images and report C's accuracy on its features against fp32. With a noisy
    bottleneck (``sigma``) the deterministic part is quantised and the noise appended behind it; the report's
    ``noise`` entry checks the int8 file's noise against the quantised deterministic part."""
    import onnxruntime

    from .quantize import int8_report, quantize_static_onnx

    calib, _ = _float_images(data, data.split["train"][:calibration_images])
    target = out / "obfuscator.int8.onnx"
    batches = [calib[i:i + 16] for i in range(0, len(calib), 16)]
    noise = None
    if sigma is None:
        quantize_static_onnx(paths["obfuscator"], target, batches)
    else:
        mean_int8 = out / "obfuscator.mean.int8.onnx"
        quantize_static_onnx(paths["obfuscator_mean"], mean_int8, batches)
        append_onnx_noise(mean_int8, target, sigma)
        probe = calib[:32]  # the same check as the fp32 file's, against the quantised deterministic part
        noise = check_noise(load_runner(target, "onnx"), probe, load_runner(mean_int8, "onnx")(probe), sigma)
        mean_int8.unlink()
    test_idx = data.split["test"] if eval_images is None else data.split["test"][:eval_images]
    images, order = _float_images(data, test_idx)
    report = int8_report(paths["obfuscator"], target, paths["classifier"], images, data.task[order], attributes,
                         len(calib))
    report["method"] = ("onnxruntime.quantization.quantize_static: QDQ, uint8 activations, int8 per-channel "
                        "weights, MinMax calibration on training images")
    report["onnxruntime"] = onnxruntime.__version__
    if noise is not None:
        report["method"] += "; the bottleneck's noise appended behind the quantised deterministic part"
        report["noise"] = noise
    return report


def _float_images(data: Any, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``float32 [N, 3, H, W]`` images in [0, 1] for dataset rows ``idx`` (sorted), and those rows."""
    order = np.sort(idx)
    return np.asarray(data.images[order], dtype=np.float32).transpose(0, 3, 1, 2) / np.float32(255.0), order
