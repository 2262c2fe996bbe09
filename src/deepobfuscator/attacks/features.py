"""Frozen-feature extraction: what the cloud (and so an eavesdropper) receives, for one split of a dataset.

Features are computed once per split with the deployed obfuscator in eval mode and kept as float16
(in memory, or in a temporary memmap when large); attackers train and evaluate on these arrays.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from ..progress import progress_bar

from ..config import RunConfig
from ..data import PreparedData, images_to_tensor
from ..methods import load_trained
from ..runs import RunDir, RunError
from ..training.modules import Modules

IN_MEMORY_LIMIT = 2 * 1024 ** 3  # bytes of float16 features kept in RAM; larger sets go to a temp memmap


def obfuscate(run_cfg: RunConfig, modules: Modules, images: torch.Tensor) -> torch.Tensor:
    """The features a phone running this run's defence sends for ``images`` (NCHW in [0, 1]).

    This is the single place that defines the deployed pipeline for every attack: the run method's
    input transform, O (which normalises inside), then its feature transform, as set on ``modules``
    by :func:`load_pipeline` (:meth:`Modules.encode`), so that attackers observe exactly what the
    cloud receives. Gradients flow through it (the white-box inversion attacker differentiates it
    with respect to ``images``).
    """
    return modules.encode(images)


def load_pipeline(run: RunDir, device: str = "cpu") -> tuple[RunConfig, Modules]:
    """A trained run's config and frozen modules with its method's transforms attached (and any per-run
    state they need, e.g. a fitted feature transform), so that :func:`obfuscate` reproduces the deployed pipeline."""
    return load_trained(run, device)


@dataclass
class FeatureBatch:
    """A mini-batch of a :class:`FeatureSet`: float32 features, [0, 1] images (if asked) and set rows."""

    features: torch.Tensor
    images: torch.Tensor | None
    rows: np.ndarray


@dataclass
class FeatureSet:
    """Features of some images of one dataset split, with access to their labels and raw images."""

    source: str  # e.g. "celeba:/data/celeba:test"
    split: str
    data: PreparedData
    indices: np.ndarray  # dataset rows, int64 [N]
    features: np.ndarray  # float16 [N, C, h, w] (array or memmap)
    excluded: int = 0  # images of the split left out because they are evaluation images
    _tmpdir: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def attributes(self) -> list[str]:
        """Names of the labelled attributes (intended and private) this set carries."""
        return [s.name for s in self.data.task_specs + self.data.private_specs]

    def labels(self, name: str) -> np.ndarray:
        """Integer labels of attribute ``name`` for the rows of this set."""
        for specs, matrix in ((self.data.task_specs, self.data.task), (self.data.private_specs, self.data.private)):
            for col, spec in enumerate(specs):
                if spec.name == name:
                    return matrix[self.indices, col]
        raise KeyError(f"attribute '{name}' is not labelled in {self.source}")

    def files(self) -> list[Path]:
        """Image files of the rows of this set."""
        return [self.data.index.files[i] for i in self.indices]


    def feature_tensor(self, rows: np.ndarray) -> torch.Tensor:
        """Float32 features of set rows ``rows``."""
        return torch.from_numpy(np.asarray(self.features[np.asarray(rows)], dtype=np.float32))

    def image_tensor(self, rows: np.ndarray) -> torch.Tensor:
        """Raw images of set rows ``rows`` as NCHW float in [0, 1]."""
        return images_to_dataset_tensor(self.data, self.indices[np.asarray(rows)])

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                with_images: bool = False) -> Iterator[FeatureBatch]:
        """Mini-batches over the whole set; shuffled per ``(seed, epoch)`` when asked."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield FeatureBatch(self.feature_tensor(rows), self.image_tensor(rows) if with_images else None, rows)


def file_key(path: Path) -> tuple[str, int]:
    """A cheap key that is equal for copies of one image file in another folder: its name and byte size."""
    return path.name, path.stat().st_size


def shared_images(files: list[Path], others: list[Path]) -> set[Path]:
    """Those of ``files`` that are the same image file as one of ``others`` (same path, or a byte-identical copy
    with the same name)."""
    import filecmp

    by_key: dict[tuple[str, int], list[Path]] = {}
    for path in others:
        by_key.setdefault(file_key(path), []).append(path)
    out = set()
    for path in files:
        matches = by_key.get(file_key(path), [])
        if any(path == other or filecmp.cmp(path, other, shallow=False) for other in matches):
            out.add(path)
    return out


def images_to_dataset_tensor(data: PreparedData, indices: np.ndarray) -> torch.Tensor:
    """Images of dataset rows ``indices`` (any order) as NCHW float in [0, 1]."""
    indices = np.asarray(indices, dtype=np.int64)
    sorter = np.argsort(indices, kind="stable")
    back = np.empty_like(sorter)
    back[sorter] = np.arange(len(indices))
    return images_to_tensor(np.asarray(data.images[indices[sorter]])[back])


def extract_features(cfg: RunConfig, modules: Modules, data: PreparedData, split: str, source: str,
                     batch_size: int = 256, device: str = "cpu", limit: int | None = None,
                     exclude: list[Path] | None = None, seed: int = 0, progress: bool = True,
                     on_batch: Callable[[torch.Tensor, np.ndarray], None] | None = None) -> FeatureSet:
    """Features of ``split`` of ``data`` through the deployed pipeline (:func:`obfuscate`), O in eval mode.

    ``exclude``: image files (or byte-identical copies of them) to leave out, which keeps attacker
    training data disjoint from the evaluation images; ``limit``: a seeded random subset of at most this many images;
    ``on_batch(float32_features, rows)`` sees every batch before rounding to float16.
    """
    if split not in data.split:
        raise RunError(f"{source}: no split named '{split}'")
    indices = np.asarray(data.split[split], dtype=np.int64)
    excluded = 0
    if exclude:
        dropped = shared_images([data.index.files[i] for i in indices], exclude)
        keep = np.asarray([data.index.files[i] not in dropped for i in indices], dtype=bool)
        indices, excluded = indices[keep], int((~keep).sum())
    if limit is not None and len(indices) > limit:
        indices = np.sort(np.random.default_rng(seed).choice(indices, size=limit, replace=False))
    if len(indices) == 0:
        raise RunError(f"{source}: split '{split}' has no images to attack with")
    modules.obfuscator.eval()
    with torch.no_grad():
        probe = obfuscate(cfg, modules, images_to_dataset_tensor(data, indices[:1]).to(device))
    shape = (len(indices), *probe.shape[1:])
    nbytes = int(np.prod(shape)) * 2
    tmpdir = None
    if nbytes > IN_MEMORY_LIMIT:
        tmpdir = tempfile.TemporaryDirectory(prefix="deepobf-features-")
        features = np.lib.format.open_memmap(Path(tmpdir.name) / "features.npy", mode="w+", dtype=np.float16,
                                             shape=shape)
    else:
        features = np.empty(shape, dtype=np.float16)
    bar = progress_bar(total=len(indices), desc=f"features {split}", unit="img", disable=not progress, leave=False)
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            rows = np.arange(start, min(start + batch_size, len(indices)))
            feats = obfuscate(cfg, modules, images_to_dataset_tensor(data, indices[rows]).to(device)).float()
            if on_batch is not None:
                on_batch(feats, rows)
            half = feats.cpu().numpy().astype(np.float16)
            if not np.isfinite(half).all():
                raise RunError(f"{source}: features overflow float16 (|value| > 65504); cannot store them")
            features[rows] = half
            bar.update(len(rows))
    bar.close()
    return FeatureSet(source, split, data, indices, features, excluded, tmpdir)


def check_disjoint(train: FeatureSet, test: FeatureSet) -> None:
    """Raise if any image (or a byte-identical copy) is both in the attackers' training set and the evaluation set."""
    shared = shared_images(train.files(), test.files())
    if shared:
        example = sorted(shared)[0]
        raise RunError(f"attacker training data ({train.source}) shares {len(shared)} image(s) with the evaluation "
                       f"data ({test.source}), e.g. {example}")
