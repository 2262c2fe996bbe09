"""Datasets: loaders for official layouts, the decode-once cache, splits and batches.

Loaders register by dataset name; :func:`prepare_data` turns a :class:`DataConfig` into arrays
and label matrices ready for training and attacks.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DataConfig
from ..registry import Registry, UnknownNameError
from ..utils import default_cache_dir
from .batches import Batch, BatchLoader, images_to_tensor
from .cache import cached_images, load_image
from .celeba import load_celeba
from .index import AttributeSpec, DataError, DatasetIndex
from .lfw import load_lfw
from .splits import SPLITS, load_split, make_split, save_split
from .statefarm import load_statefarm
from .synth import render_synthetic_celeba

Loader = Callable[[Path, "int | None"], DatasetIndex]
LOADERS: Registry[Loader] = Registry("dataset")
LOADERS.add("celeba", load_celeba, "CelebA (official layout; list_eval_partition.txt optional)")
LOADERS.add("lfw", load_lfw, "Labeled Faces in the Wild (deep-funneled), gender lists or lfw_attributes.txt")
LOADERS.add("statefarm", load_statefarm, "State Farm distracted drivers (driver_imgs_list.csv)")

SYNTH_VERSION = 1
SYNTH_IMAGES = 4000


def register_loader(name: str, loader: Loader, description: str = "", *, replace: bool = False) -> Loader:
    """Make ``loader`` (root, max_images -> DatasetIndex) available as ``data.dataset = name``."""
    return LOADERS.add(name, loader, description, replace=replace)


def default_root(cache_dir: str | Path | None = None) -> Path:
    """The embedded synthetic face set, rendered on first use into the cache directory."""
    base = Path(cache_dir) if cache_dir else default_cache_dir()
    root = base / f"synthetic-faces-v{SYNTH_VERSION}"
    if not (root / "list_attr_celeba.txt").is_file():
        tmp = base / f".synthetic-faces-v{SYNTH_VERSION}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        render_synthetic_celeba(tmp, n_images=SYNTH_IMAGES, seed=0, progress=True)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root


def load_index(dataset: str, root: str | Path | None, max_images: int | None = None,
               cache_dir: str | Path | None = None) -> DatasetIndex:
    """Read a dataset root with the registered loader (the synthetic set when ``root`` is None)."""
    try:
        loader = LOADERS.get(dataset)
    except UnknownNameError as exc:
        raise DataError(f"config data.dataset: {exc}") from exc
    path = Path(root) if root is not None else default_root(cache_dir)
    return loader(path, max_images)


@dataclass
class PreparedData:
    """Everything training and attacks need from a dataset."""

    index: DatasetIndex
    images: np.ndarray  # uint8 [N, H, W, 3] memmap
    task_specs: list[AttributeSpec]
    private_specs: list[AttributeSpec]
    task: np.ndarray  # int64 [N, n_task]
    private: np.ndarray  # int64 [N, n_private]
    split: dict[str, np.ndarray]

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
               drop_last: bool = False, limit: int | None = None, rank: int = 0, world: int = 1) -> BatchLoader:
        """Batches of one split (optionally only its first ``limit`` images)."""
        idx = self.split[split] if limit is None else self.split[split][:limit]
        return BatchLoader(self.images, self.task, self.private, idx, batch_size, shuffle, seed,
                           drop_last, rank, world)


def prepare_data(cfg: DataConfig, split: dict | None = None, progress: bool = True,
                 index: DatasetIndex | None = None) -> tuple[PreparedData, dict]:
    """Load, cache and split per ``cfg``; returns the data and the raw split record to save."""
    index = index or load_index(cfg.dataset, cfg.root, cfg.max_images, cfg.cache_dir)
    task_specs = index.select(list(cfg.task), "intended")
    private_specs = index.select(list(cfg.private), "private")
    overlap = set(cfg.task) & set(cfg.private)
    if overlap:
        raise DataError(f"attribute(s) {sorted(overlap)} are both intended and private")
    if split is None:
        split = make_split(index, cfg.split_seed, cfg.split_fractions, stratify=index.stratify, by=cfg.split_by)
    elif split.get("fingerprint") not in (None, index.fingerprint()):
        raise DataError(
            f"the recorded split belongs to a different file list than the dataset at {index.root}"
        )
    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    images = cached_images(index, size, Path(cfg.cache_dir) if cfg.cache_dir else None, progress=progress)
    parts = {k: np.asarray(split[k], dtype=np.int64) for k in SPLITS}
    return (
        PreparedData(index, images, task_specs, private_specs, index.label_matrix(list(cfg.task)),
                     index.label_matrix(list(cfg.private)), parts),
        split,
    )


__all__ = [
    "AttributeSpec", "Batch", "BatchLoader", "DataError", "DatasetIndex", "PreparedData", "SPLITS",
    "LOADERS", "cached_images", "default_root", "images_to_tensor", "load_image", "load_index", "load_split",
    "make_split", "prepare_data", "register_loader", "save_split",
]
