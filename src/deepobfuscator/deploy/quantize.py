"""int8 obfuscator with ONNX Runtime static quantisation, and what it costs C in accuracy.

O is quantised (QDQ format, uint8 activations, int8 per-channel weights) after ORT's pre-processing
(shape inference + graph optimisation), calibrated with MinMax on training images. C stays fp32 in
the cloud; :func:`int8_report` compares C's test accuracy on features from the fp32 O, from the int8
O, and after float16 / int8 wire transport of the fp32 features.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import heads
from .sessions import open_session, run_batched
from .wire import dequantize_int8, quantize_int8


def quantize_static_onnx(fp32_path: Path, int8_path: Path, calibration: Iterable[np.ndarray]) -> None:
    """Write a statically quantised copy of ``fp32_path`` calibrated on the ``calibration`` batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise ValueError(f"{fp32_path}: no calibration images for int8 quantisation")
    input_name = open_session(fp32_path).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(dir=Path(int8_path).parent) as tmp:
            pre = Path(tmp) / "preprocessed.onnx"
            quant_pre_process(str(fp32_path), str(pre))
            quantize_static(str(pre), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.getLogger().setLevel(quiet)


def accuracy(logits: np.ndarray, labels: np.ndarray, attributes: list[dict]) -> dict[str, float]:
    """Per-attribute accuracy of ``logits`` against integer ``labels [N, n_attr]``."""
    pred = heads.predictions(logits, attributes)
    return {a["name"]: float((pred[:, i] == labels[:, i]).mean()) for i, a in enumerate(attributes)}


def int8_report(obfuscator_fp32: Path, obfuscator_int8: Path, classifier: Path, images: np.ndarray,
                labels: np.ndarray, attributes: list[dict], calibration_images: int) -> dict[str, Any]:
    """C's accuracy on features of the fp32 O, the int8 O, and float16/int8 wire transport; deltas vs fp32."""
    o32, o8, clf = open_session(obfuscator_fp32), open_session(obfuscator_int8), open_session(classifier)
    feats = run_batched(o32, images)
    feats_int8 = run_batched(o8, images)
    q, scale, zp = quantize_int8(feats)
    variants = {
        "fp32": feats,
        "int8_obfuscator": feats_int8,
        "float16_transport": feats.astype(np.float16).astype(np.float32),
        "int8_transport": dequantize_int8(q, scale, zp),
    }
    logits = {k: run_batched(clf, v) for k, v in variants.items()}
    ref_pred = heads.predictions(logits["fp32"], attributes)
    acc = {k: accuracy(v, labels, attributes) for k, v in logits.items()}
    return {
        "calibration_images": int(calibration_images),
        "eval_images": int(len(images)),
        "eval_split": "test",
        "accuracy": acc,
        "delta_vs_fp32": {k: {a: acc[k][a] - acc["fp32"][a] for a in acc["fp32"]} for k in acc if k != "fp32"},
        "agreement_with_fp32": {k: float((heads.predictions(v, attributes) == ref_pred).all(1).mean())
                                for k, v in logits.items() if k != "fp32"},
        "feature_max_abs_error": {k: float(np.abs(v - feats).max()) for k, v in variants.items() if k != "fp32"},
    }
