"""What the phone sends, for one split of a dataset: the deployed pipeline and the feature sets attackers use.

A deterministic pipeline's features are computed once per split and kept as float16 (in memory, or
in a temporary memmap when large). A stochastic pipeline (noise on pixels or features) is never
frozen into one draw: its :class:`FeatureSet` sends the images through the pipeline again at every
access, so an attacker sees a fresh draw on every epoch and at evaluation, as an eavesdropper on
many users' traffic would; ``repeat`` averages that many draws of the same image (the
repeated-query attacker).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import RunConfig
from ..data import PreparedData, images_to_tensor
from ..methods import load_trained
from ..progress import progress_bar
from ..runs import RunDir, RunError
from ..training.modules import Modules

IN_MEMORY_LIMIT = 2 * 1024 ** 3  # bytes of float16 features kept in RAM; larger sets go to a temp memmap
Send = Callable[[torch.Tensor], torch.Tensor]


def obfuscate(run_cfg: RunConfig, modules: Modules, images: torch.Tensor) -> torch.Tensor:
    """The features a phone running this run's defence sends for ``images`` (NCHW in [0, 1]).

    This is the single place that defines the deployed pipeline for every attack: the run method's
    input transform, O (which normalises inside), then its feature transform, as set on ``modules``
    by :func:`deepobfuscator.methods.load_trained` (:meth:`Modules.encode`), so that attackers observe
    exactly what the cloud receives. Gradients flow through it (the white-box inversion attacker
    differentiates it with respect to ``images``).
    """
    return modules.encode(images)


@dataclass
class Pipeline:
    """A trained run's frozen deployed pipeline: config, modules and whether what it sends is random."""

    cfg: RunConfig
    modules: Modules
    device: str = "cpu"
    stochastic: bool = False

    def send(self, images: torch.Tensor) -> torch.Tensor:
        """What the phone sends for ``images`` ([0, 1] NCHW): :func:`obfuscate` with O in eval mode."""
        self.modules.obfuscator.eval()
        return obfuscate(self.cfg, self.modules, images)

    def detect_stochastic(self, probe: torch.Tensor) -> bool:
        """Send ``probe`` twice; the pipeline is stochastic when the two draws differ (sets ``stochastic``)."""
        with torch.no_grad():
            a, b = self.send(probe.to(self.device)), self.send(probe.to(self.device))
        self.stochastic = not torch.equal(a, b)
        return self.stochastic


def load_pipeline(run: RunDir, device: str = "cpu") -> Pipeline:
    """A trained run's deployed pipeline: frozen modules with its method's transforms (and any per-run
    state they need, e.g. a fitted feature transform) attached, so that :meth:`Pipeline.send` reproduces
    what the phone sends."""
    cfg, modules = load_trained(run, device)
    return Pipeline(cfg, modules, device)


@dataclass
class FeatureBatch:
    """A mini-batch of a :class:`FeatureSet`: float32 features, [0, 1] images (if asked) and set rows."""

    features: torch.Tensor
    images: torch.Tensor | None
    rows: np.ndarray


@dataclass
class FeatureSet:
    """Features of some images of one dataset split, with access to their labels and raw images.

    ``features`` holds one stored draw (deterministic pipelines); when it is None, ``send`` makes a
    fresh draw at every access, averaged over ``repeat`` draws. ``post`` maps features further (e.g.
    the deployed C's logits for the oracle floor).
    """

    source: str  # e.g. "celeba:/data/celeba:test"
    split: str
    data: PreparedData
    indices: np.ndarray  # dataset rows, int64 [N]
    features: np.ndarray | None  # float16 [N, *shape] (array or memmap); None: drawn at access
    excluded: int = 0  # images of the split left out because they are in the other set
    send: Send | None = None  # the deployed pipeline, for fresh draws
    repeat: int = 1  # draws averaged per access (stochastic sets only)
    post: Send | None = None
    device: str = "cpu"
    _tmpdir: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def stochastic(self) -> bool:
        """True when every access draws new features."""
        return self.features is None

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one image's features (without the batch dimension)."""
        if self.features is not None:
            return tuple(self.features.shape[1:])
        return tuple(self.feature_tensor(np.arange(min(2, len(self)))).shape[1:])

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

    def subset(self, rows: np.ndarray) -> "FeatureSet":
        """The set restricted to set rows ``rows`` (stored features copied)."""
        rows = np.asarray(rows, dtype=np.int64)
        feats = None if self.features is None else np.asarray(self.features[rows])
        return replace(self, indices=self.indices[rows], features=feats, excluded=0, _tmpdir=None)

    def with_repeat(self, repeat: int) -> "FeatureSet":
        """The repeated-query view: ``repeat`` fresh draws averaged per image (stochastic sets only)."""
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        if repeat > 1 and not self.stochastic:
            raise ValueError(f"{self.source}: repeated queries only differ for a stochastic pipeline")
        return replace(self, repeat=repeat)

    def mapped(self, fn: Send, batch_size: int = 256) -> "FeatureSet":
        """The set seen through ``fn`` (e.g. the deployed C): computed once when deterministic, else per access."""
        if self.stochastic:
            post = fn if self.post is None else (lambda x, a=self.post: fn(a(x)))
            return replace(self, post=post)
        out = []
        with torch.no_grad():
            for batch in self.batches(batch_size):
                out.append(fn(batch.features.to(self.device)).float().cpu().numpy())
        feats = np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)
        return replace(self, features=feats, post=None, _tmpdir=None)

    def feature_tensor(self, rows: np.ndarray) -> torch.Tensor:
        """Float32 features of set rows ``rows`` (a fresh draw, averaged over ``repeat``, when stochastic)."""
        rows = np.asarray(rows)
        if self.features is not None:
            return torch.from_numpy(np.asarray(self.features[rows], dtype=np.float32))
        if self.send is None:
            raise RunError(f"{self.source}: a stochastic feature set needs the pipeline to draw from")
        images = self.image_tensor(rows).to(self.device)
        with torch.no_grad():
            feats = self.send(images).float()
            for _ in range(self.repeat - 1):
                feats = feats + self.send(images).float()
            feats = feats / self.repeat
            if self.post is not None:
                feats = self.post(feats).float()
        return feats.cpu()

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


def select_rows(data: PreparedData, split: str, source: str, limit: int | None = None,
                exclude: list[Path] | None = None, seed: int = 0) -> tuple[np.ndarray, int]:
    """Dataset rows of ``split`` (``all``: every image) minus images in ``exclude`` (or byte-identical copies),
    then a seeded subset of at most ``limit``; returns the rows and how many were excluded."""
    if split == "all":
        indices = np.arange(len(data.images), dtype=np.int64)
    elif split in data.split:
        indices = np.asarray(data.split[split], dtype=np.int64)
    else:
        raise RunError(f"{source}: no split named '{split}'")
    excluded = 0
    if exclude:
        dropped = shared_images([data.index.files[i] for i in indices], exclude)
        keep = np.asarray([data.index.files[i] not in dropped for i in indices], dtype=bool)
        indices, excluded = indices[keep], int((~keep).sum())
    if limit is not None and len(indices) > limit:
        indices = np.sort(np.random.default_rng(seed).choice(indices, size=limit, replace=False))
    if len(indices) == 0:
        raise RunError(f"{source}: split '{split}' has no images to attack with")
    return indices, excluded


def extract_features(pipeline: Pipeline, data: PreparedData, indices: np.ndarray, split: str, source: str,
                     batch_size: int = 256, excluded: int = 0, progress: bool = True,
                     on_batch: Callable[[torch.Tensor, np.ndarray], None] | None = None) -> FeatureSet:
    """Features of dataset rows ``indices`` through the deployed pipeline (:meth:`Pipeline.send`).

    A stochastic pipeline gives a set that draws at access (nothing stored); ``on_batch(float32_features,
    rows)`` still sees one draw of every batch (e.g. to score the deployed C).
    """
    device = pipeline.device
    indices = np.asarray(indices, dtype=np.int64)
    with torch.no_grad():
        probe = pipeline.send(images_to_dataset_tensor(data, indices[:1]).to(device))
    shape = (len(indices), *probe.shape[1:])
    tmpdir = None
    features: np.ndarray | None = None
    if not pipeline.stochastic:
        if int(np.prod(shape)) * 2 > IN_MEMORY_LIMIT:
            tmpdir = tempfile.TemporaryDirectory(prefix="deepobf-features-")
            features = np.lib.format.open_memmap(Path(tmpdir.name) / "features.npy", mode="w+", dtype=np.float16,
                                                 shape=shape)
        else:
            features = np.empty(shape, dtype=np.float16)
    if features is not None or on_batch is not None:
        bar = progress_bar(total=len(indices), desc=f"features {split}", unit="img", disable=not progress, leave=False)
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                rows = np.arange(start, min(start + batch_size, len(indices)))
                feats = pipeline.send(images_to_dataset_tensor(data, indices[rows]).to(device)).float()
                if on_batch is not None:
                    on_batch(feats, rows)
                if features is not None:
                    half = feats.cpu().numpy().astype(np.float16)
                    if not np.isfinite(half).all():
                        raise RunError(f"{source}: features overflow float16 (|value| > 65504); cannot store them")
                    features[rows] = half
                bar.update(len(rows))
        bar.close()
    return FeatureSet(source, split, data, indices, features, excluded, send=pipeline.send, device=device,
                      _tmpdir=tmpdir)


def check_disjoint(train: FeatureSet, test: FeatureSet) -> None:
    """Raise if any image (or a byte-identical copy) is both in the attackers' training set and the evaluation set."""
    shared = shared_images(train.files(), test.files())
    if shared:
        example = sorted(shared)[0]
        raise RunError(f"attacker training data ({train.source}) shares {len(shared)} image(s) with the evaluation "
                       f"data ({test.source}), e.g. {example}")
