"""Exporting an obfuscator whose output is random (the noisy bottleneck): the noise lives in the exported graph.

The phone's exported O adds fresh Gaussian noise per request itself (ONNX ``RandomNormalLike``, or the traced
``randn_like`` in TorchScript), so client, service and int8 need no knowledge of it. Parity is checked in two
parts: the deterministic part (O exported with the noise off) against PyTorch within tolerance, and the
deployed file's noise against the bottleneck's: fresh draws on every call, per-channel std within
``rel_tolerance`` of sigma and mean close to 0, measured as (deployed output - deterministic reference).

int8: the deterministic part is quantised on its own (calibrating a graph with a random op would calibrate on
noise), then :func:`append_onnx_noise` adds the same fresh per-call noise behind the quantised graph.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


class NoiseParityError(ValueError):
    """The exported obfuscator's noise does not match the bottleneck's."""


MEAN_BOUND_SE = 5.0  # check_noise's bound on the noise's mean, in standard errors (two-sided P < 6e-7)


def check_noise(runner: Runner, inputs: np.ndarray, mean_reference: np.ndarray, sigma: np.ndarray,
                rel_tolerance: float = 0.15, draws: int = 4) -> dict[str, Any]:
    """Noise statistics of an exported noisy obfuscator over ``draws`` calls; NoiseParityError when they differ.

    The residuals' mean must lie within :data:`MEAN_BOUND_SE` standard errors of 0: the draws are the runtime's own
    (unseeded, as deployed), so the bound is set where an unbiased export fails by chance less than once in a million
    checks (3 standard errors failed about 1 in 370), while a bias of a tenth of sigma on the export's probe is still
    caught."""
    outs = [runner(inputs) for _ in range(draws)]
    if any(o.shape != mean_reference.shape for o in outs):
        raise NoiseParityError(f"exported noisy obfuscator returns {list(outs[0].shape)}, expected "
                               f"{list(mean_reference.shape)}")
    if any(np.array_equal(outs[0], o) for o in outs[1:]):
        raise NoiseParityError("exported obfuscator repeats its noise between calls (no fresh draw per request)")
    resid = np.stack([o - mean_reference for o in outs])  # [draws, N, k, h, w]
    std = resid.transpose(2, 0, 1, 3, 4).reshape(resid.shape[2], -1).std(1)
    mean = float(np.abs(resid.mean()))
    sigma = np.asarray(sigma, dtype=np.float64)
    rel = np.abs(std / sigma - 1.0)
    bound = MEAN_BOUND_SE * float(sigma.max()) / np.sqrt(resid.size / len(sigma)) + 1e-3
    if not (rel <= rel_tolerance).all():
        raise NoiseParityError(f"exported noise has per-channel std {std.round(4).tolist()}; the bottleneck's sigma is "
                               f"{sigma.round(4).tolist()} (tolerance {rel_tolerance:.0%})")
    if mean > bound:
        raise NoiseParityError(f"exported noise has mean {mean:.4f}, beyond {MEAN_BOUND_SE:g} standard errors of 0 "
                               f"({bound:.4f}) for the bottleneck's sigma {sigma.round(4).tolist()}")
    return {"sigma": sigma.round(6).tolist(), "measured_std": std.round(6).tolist(), "measured_mean": round(mean, 6),
            "draws": draws, "images": int(len(inputs)), "fresh_per_call": True, "added_by": "exported graph"}


def append_onnx_noise(src: Path, dst: Path, sigma: np.ndarray) -> None:
    """Copy the ONNX model ``src`` to ``dst`` with ``output + RandomNormalLike(output) * sigma`` (per channel,
    dimension 1) as its output, under the same output name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError(f"{src}: expected one output to add noise to, found {len(graph.output)}")
    name = graph.output[0].name
    mean = f"{name}_mean"
    for node in graph.node:  # the deterministic output is renamed; the noisy sum takes its name
        node.output[:] = [mean if o == name else o for o in node.output]
        node.input[:] = [mean if i == name else i for i in node.input]
    std = np.asarray(sigma, dtype=np.float32).reshape(1, -1, 1, 1)
    graph.initializer.append(numpy_helper.from_array(std, f"{name}_sigma"))
    graph.node.extend([
        helper.make_node("RandomNormalLike", [mean], [f"{name}_eps"], dtype=TensorProto.FLOAT, mean=0.0, scale=1.0),
        helper.make_node("Mul", [f"{name}_eps", f"{name}_sigma"], [f"{name}_noise"]),
        helper.make_node("Add", [mean, f"{name}_noise"], [name]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
