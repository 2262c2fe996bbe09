"""C's logits -> per-attribute probabilities and predictions in numpy (mirrors `deepobfuscator.losses`).

Attributes are plain dicts ``{"name", "num_classes", "classes"}`` (the model card's form), so this
module needs neither torch nor a run directory.
"""
from __future__ import annotations

from typing import Any

import numpy as np

Attribute = dict[str, Any]


def num_outputs(attribute: Attribute) -> int:
    """Logits one attribute takes: 1 for binary, one per class otherwise."""
    k = int(attribute["num_classes"])
    return 1 if k == 2 else k


def attribute_blocks(logits: np.ndarray, attributes: list[Attribute]) -> list[np.ndarray]:
    """Cut ``[N, outputs]`` logits into one block per attribute."""
    sizes = [num_outputs(a) for a in attributes]
    if logits.ndim != 2 or logits.shape[1] != sum(sizes):
        raise ValueError(f"logits of shape {list(logits.shape)} do not fit attributes needing {sum(sizes)} outputs")
    return np.split(logits, np.cumsum(sizes)[:-1], axis=1)


def probabilities(logits: np.ndarray, attributes: list[Attribute]) -> list[np.ndarray]:
    """Per attribute: P(positive) ``[N]`` (binary) or a softmax ``[N, K]`` (multi-class)."""
    out = []
    for block, attr in zip(attribute_blocks(np.asarray(logits, dtype=np.float64), attributes), attributes):
        if num_outputs(attr) == 1:
            out.append(0.5 * (1.0 + np.tanh(0.5 * block[:, 0])))  # overflow-free sigmoid
        else:
            shifted = np.exp(block - block.max(axis=1, keepdims=True))
            out.append(shifted / shifted.sum(axis=1, keepdims=True))
    return out


def predictions(logits: np.ndarray, attributes: list[Attribute]) -> np.ndarray:
    """Predicted class per attribute ``[N, n_attr]`` (int64), as `losses.predictions`."""
    cols = [(b[:, 0] > 0).astype(np.int64) if num_outputs(a) == 1 else b.argmax(1)
            for b, a in zip(attribute_blocks(np.asarray(logits), attributes), attributes)]
    return np.stack(cols, axis=1)


def per_image(logits: np.ndarray, attributes: list[Attribute]) -> list[dict[str, float | list[float]]]:
    """One ``{attribute: probability or class probabilities}`` dict per image."""
    probs = probabilities(logits, attributes)
    rows: list[dict[str, float | list[float]]] = []
    for i in range(len(logits)):
        rows.append({a["name"]: (float(p[i]) if p.ndim == 1 else [float(v) for v in p[i]])
                     for a, p in zip(attributes, probs)})
    return rows
