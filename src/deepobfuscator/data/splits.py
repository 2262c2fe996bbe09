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
    parts: dict[str, np.ndarray] | None = None
    note = None
    if index.partition is not None:
        official = {name: np.flatnonzero(index.partition == i) for i, name in enumerate(SPLITS)}
        empty = [name for name in SPLITS if len(official[name]) == 0]
        if not empty:
            parts, source = official, "official"
        else:  # e.g. data.max_images keeps only the head of a full download, all of it official 'train'
            note = (f"the official partition leaves split(s) {', '.join(empty)} empty for these {len(index)} "
                    f"images; a seeded split was made instead")
    if parts is None:
        if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
            raise DataError(f"split fractions must be three positive numbers summing to 1, got {list(fractions)}")
        rng = np.random.default_rng(seed)
        if stratify is None:
            order = rng.permutation(len(index))
        else:  # spread each group evenly over [0, 1) and cut globally, so small groups cannot empty a split
            stratify = np.asarray(stratify)
            if len(stratify) != len(index):
                raise DataError(f"stratification labels: {len(stratify)} for {len(index)} images of '{index.name}'")
            keys = np.empty(len(index))
            for value in np.unique(stratify):
                members = rng.permutation(np.flatnonzero(stratify == value))
                keys[members] = (np.arange(len(members)) + rng.random()) / len(members)
            order = np.argsort(keys, kind="stable")
        n_train = int(round(fractions[0] * len(order)))
        n_val = int(round(fractions[1] * len(order)))
        parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        parts = {k: np.sort(v) for k, v in parts.items()}
        source = "seeded"
    for name in SPLITS:
        if len(parts[name]) == 0:
            raise DataError(f"split '{name}' of dataset '{index.name}' at {index.root} is empty ({len(index)} images)")
    extra = {"note": note} if note else {}
    return {
        "source": source,
        **extra,
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
