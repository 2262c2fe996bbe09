"""ONNX Runtime sessions on the CPU (no torch): open a model file, run it, batch by batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def open_session(path: str | Path, threads: int | None = None):
    """A CPU ``onnxruntime.InferenceSession`` for ``path`` (``threads``: intra-op threads, None = ORT default)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX model not found")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ValueError(f"{path}: not a loadable ONNX model: {exc}") from exc


def run_session(session, array: np.ndarray) -> np.ndarray:
    """The first output of ``session`` for ``array`` fed to its first input."""
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(array, dtype=np.float32)})[0]


def run_batched(session, array: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """:func:`run_session` over ``array`` in chunks of ``batch_size`` rows, concatenated."""
    return np.concatenate([run_session(session, array[i:i + batch_size]) for i in range(0, len(array), batch_size)])
