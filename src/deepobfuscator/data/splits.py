"""Train/val/test splits: the official partition when a dataset has one, else seeded and recorded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..utils import atomic_write_json
from .index import DataError, DatasetIndex

SPLITS = ("train", "val", "test")


def _check_fractions(fractions: tuple[float, float, float] | list[float]) -> None:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise DataError(f"split fractions must be three positive numbers summing to 1, got {list(fractions)}")


def group_split(groups: np.ndarray, seed: int, fractions: tuple[float, float, float] | list[float]
                ) -> dict[str, np.ndarray]:
    """Rows split so that no group (e.g. a person or a driver) is on two sides: the groups in a seeded order, each
    given whole to the split whose share of images is furthest below its fraction."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    names = rng.permutation(np.unique(groups))
    if len(names) < 3:
        raise DataError(f"a split by identity needs at least 3 identities, found {len(names)}")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    counts = dict.fromkeys(SPLITS, 0)
    for i, group in enumerate(names):
        members = np.flatnonzero(groups == group)
        if i < len(SPLITS):  # every split gets one group first
            side = SPLITS[i]
        else:
            side = min(SPLITS, key=lambda s: counts[s] / len(groups) - fractions[SPLITS.index(s)])
        parts[side].append(members)
        counts[side] += len(members)
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def make_split(
    index: DatasetIndex,
    seed: int,
    fractions: tuple[float, float, float] | list[float] = (0.8, 0.1, 0.1),
    stratify: np.ndarray | None = None,
    by: str = "image",
) -> dict:
    """Split indices of ``index``; deterministic for ``seed``; optional stratification labels. ``by="identity"``:
    no identity (person, driver) on two sides (:func:`group_split`; what a new user meets)."""
    if by not in ("image", "identity"):
        raise DataError(f"data.split_by must be 'image' or 'identity', got {by!r}")
    parts: dict[str, np.ndarray] | None = None
    note = None
    if by == "identity":
        if index.identities is None:
            raise DataError(f"data.split_by=identity: dataset '{index.name}' at {index.root} has no identity labels")
        _check_fractions(fractions)
        parts, source = group_split(index.identities, seed, fractions), "seeded by identity"
    elif index.partition is not None:
        official = {name: np.flatnonzero(index.partition == i) for i, name in enumerate(SPLITS)}
        empty = [name for name in SPLITS if len(official[name]) == 0]
        if not empty:
            parts, source = official, "official"
        else:  # e.g. data.max_images keeps only the head of a full download, all of it official 'train'
            note = (f"the official partition leaves split(s) {', '.join(empty)} empty for these {len(index)} "
                    f"images; a seeded split was made instead")
    if parts is None:
        _check_fractions(fractions)
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
        "by": by,
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
