"""Train/val/test splits: the official partition when a dataset has one, else seeded and recorded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..utils import atomic_write_json
from .index import DataError, DatasetIndex

SPLITS = ("train", "val", "test")


def make_split(
    index: DatasetIndex,
    seed: int,
    fractions: tuple[float, float, float] | list[float] = (0.8, 0.1, 0.1),
    stratify: np.ndarray | None = None,
) -> dict:
    """Split indices of ``index``; deterministic for ``seed``; optional stratification labels."""
    if index.partition is not None:
        parts = {name: np.flatnonzero(index.partition == i) for i, name in enumerate(SPLITS)}
        source = "official"
    else:
        if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
            raise DataError(f"split fractions must be three positive numbers summing to 1, got {list(fractions)}")
        rng = np.random.default_rng(seed)
        groups = [np.arange(len(index))] if stratify is None else [
            np.flatnonzero(stratify == value) for value in np.unique(stratify)
        ]
        parts = {name: [] for name in SPLITS}
        for members in groups:
            members = rng.permutation(members)
            n_train = int(round(fractions[0] * len(members)))
            n_val = int(round(fractions[1] * len(members)))
            parts["train"].append(members[:n_train])
            parts["val"].append(members[n_train:n_train + n_val])
            parts["test"].append(members[n_train + n_val:])
        parts = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
        source = "seeded"
    for name in SPLITS:
        if len(parts[name]) == 0:
            raise DataError(f"split '{name}' of dataset '{index.name}' at {index.root} is empty ({len(index)} images)")
    return {
        "source": source,
        "seed": seed,
        "fractions": list(fractions),
        "count": len(index),
        "fingerprint": index.fingerprint(),
        **{k: v.astype(int).tolist() for k, v in parts.items()},
    }


def save_split(split: dict, path: Path) -> None:
    """Write ``split.json``."""
    atomic_write_json(path, split)


def load_split(path: Path, index: DatasetIndex | None = None) -> dict[str, np.ndarray]:
    """Read ``split.json``; if ``index`` is given, check it describes the same files."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: split file not found") from exc
    if index is not None and raw.get("fingerprint") != index.fingerprint():
        raise DataError(
            f"{path}: split was made for a different file list ({raw.get('count')} images, "
            f"fingerprint {raw.get('fingerprint')}) than the dataset at {index.root} ({len(index)} images)"
        )
    return {k: np.asarray(raw[k], dtype=np.int64) for k in SPLITS}
