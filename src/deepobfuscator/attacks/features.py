"""What the phone sends, for one split of a dataset: the deployed pipeline and the feature sets attackers use.

A deterministic pipeline's features are computed once per split and kept as float16 (in memory, or
in a memmap when large). A stochastic pipeline (noise on pixels or features) is never frozen into one
draw: an attacker sees a fresh draw on every epoch and at evaluation, as an eavesdropper on many users'
traffic would; ``repeat`` averages that many draws of the same image (the repeated-query attacker), and
``repeat = LIMIT`` is what unlimited averaging converges to.

Two exact ways to draw. The *black-box* path sends the images through the whole pipeline again at every
access. The *fast path* serves pipelines that declare themselves a deterministic prefix plus a noise tail
(:class:`~deepobfuscator.models.factorised.Factorisation`) and pass :func:`check_factorisation`: the prefix is
computed once per image (kept in float32) and every access draws the tail on it, ``m``-averages from their exact
distribution. Both give the same distribution of features; anything undeclared keeps the black-box path.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import RunConfig
from ..data import PreparedData, images_to_tensor
from ..methods import load_trained
from ..models.factorised import LIMIT, Factorisation, NoiseTail, is_limit
from ..progress import progress_bar
from ..runs import RunDir, RunError
from ..training.modules import Modules
from ..utils import atomic_write_json

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
    """A trained run's frozen deployed pipeline: config, modules, whether what it sends is random and, when it is,
    the checked factorisation the fast path draws from (None: the black-box path)."""

    cfg: RunConfig
    modules: Modules
    device: str = "cpu"
    stochastic: bool = False
    factorisation: Factorisation | None = None

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

    def declare(self, probe: torch.Tensor, fast: bool = True, seed: int = 0) -> dict[str, Any]:
        """For a stochastic pipeline, check the modules' declared factorisation on ``probe`` images
        (:func:`check_factorisation`) and use it when it holds and ``fast`` is set; returns the record for
        attack.json (``path``: ``fast``, ``black-box`` or ``deterministic``)."""
        self.factorisation = None
        if not self.stochastic:
            return {"path": "deterministic"}
        declared = self.modules.factorisation()
        if declared is None:
            return {"path": "black-box", "declared": None,
                    "reason": "the pipeline declares no deterministic prefix + noise tail"}
        check = check_factorisation(self, declared, probe.to(self.device), seed=seed)
        if not fast:
            return {"path": "black-box", "declared": declared.tail.describe(), "check": check,
                    "reason": "the fast path was switched off (--black-box)"}
        if not check["passed"]:
            return {"path": "black-box", "declared": declared.tail.describe(), "check": check,
                    "reason": f"the declared factorisation does not match the pipeline: {check['failure']}"}
        self.factorisation = declared
        return {"path": "fast", "declared": declared.tail.describe(), "check": check}


def _flat_raw(fac: Factorisation, sent: torch.Tensor) -> torch.Tensor:
    return fac.tail.unpost(sent).flatten(1)


@torch.no_grad()
def check_factorisation(pipeline: Pipeline, fac: Factorisation, probe: torch.Tensor, draws: int = 16, seed: int = 0,
                        alpha: float = 1e-3, rel_tolerance: float = 1e-4) -> dict[str, Any]:
    """Compare a declared factorisation with the black-box pipeline on ``probe`` images.

    1. Deterministic parts: the pipeline with its own noise switched off (``fac.noise_off()``) must equal
       ``tail.post(prefix(x))`` (max |difference| within ``rel_tolerance`` of the features' scale).
    2. Noise: ``draws`` black-box residuals (what is sent minus its deterministic part, mapped back to the tail's raw
       space) and as many residuals drawn from the declared tail must pass a two-sample Kolmogorov-Smirnov test
       (p >= ``alpha``), pooled over every value, and per channel after standardising by the declared std.
    Draws are seeded, so the verdict is reproducible.
    """
    from scipy.stats import ks_2samp

    prefix = fac.prefix(probe).float()
    with fac.noise_off():
        deterministic = pipeline.send(probe).float()
    expected = fac.tail.post(prefix).float()
    out: dict[str, Any] = {"probe_images": int(len(probe)), "draws": draws, "alpha": alpha}
    if deterministic.shape != expected.shape:
        return {**out, "passed": False, "failure": f"deterministic part has shape {list(deterministic.shape)}, "
                f"the declared prefix gives {list(expected.shape)}"}
    scale = float(deterministic.abs().max()) + 1.0
    diff = float((deterministic - expected).abs().max())
    out["deterministic_max_abs_diff"] = round(diff, 8)
    if not diff <= rel_tolerance * scale:
        return {**out, "passed": False, "failure": f"the deterministic part differs from the declared prefix by up to "
                f"{diff:.3g} (tolerance {rel_tolerance * scale:.3g})"}
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        base = _flat_raw(fac, deterministic)
        observed = torch.stack([_flat_raw(fac, pipeline.send(probe).float()) - base for _ in range(draws)])
        declared = torch.stack([fac.tail.draw(prefix).float().flatten(1) - prefix.flatten(1) for _ in range(draws)])
    finally:
        torch.random.set_rng_state(generator_state)
    pooled = ks_2samp(observed.flatten().double().numpy(), declared.flatten().double().numpy())
    out["ks_statistic"], out["ks_pvalue"] = round(float(pooled.statistic), 6), float(pooled.pvalue)
    out["observed_std"] = round(float(observed.std()), 6)
    out["declared_std"] = round(float(declared.std()), 6)
    channels = len(fac.tail.variance())
    per_channel = []
    if channels > 1 and observed.shape[-1] % channels == 0:
        std = fac.tail.variance().sqrt().clamp(min=1e-12).double()
        obs = observed.double().reshape(draws, len(probe), channels, -1)
        dec = declared.double().reshape(draws, len(probe), channels, -1)
        for c in range(channels):
            test = ks_2samp((obs[:, :, c] / std[c]).flatten().numpy(), (dec[:, :, c] / std[c]).flatten().numpy())
            per_channel.append(float(test.pvalue))
        out["ks_min_channel_pvalue"] = min(per_channel)
    # the per-channel tests are many: Bonferroni keeps the chance of a false alarm at alpha
    worst = min([out["ks_pvalue"]] + [p * len(per_channel) for p in per_channel])
    if worst < alpha:
        return {**out, "passed": False, "failure": f"the pipeline's noise differs from the declared "
                f"{fac.tail.name} tail (two-sample KS p = {worst:.2g} < {alpha}; observed std "
                f"{out['observed_std']}, declared {out['declared_std']})"}
    return {**out, "passed": True}


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

    ``features`` holds one stored draw of a deterministic pipeline; with a ``tail`` it holds the declared prefix
    and every access draws the tail on it (the fast path); when it is None, ``send`` makes a fresh draw at every
    access (the black-box path). Stochastic sets average ``repeat`` draws per access (``LIMIT``: the prefix
    itself). ``post`` maps features further (e.g. the deployed C's logits for the oracle floor).
    """

    source: str  # e.g. "celeba:/data/celeba:test"
    split: str
    data: PreparedData
    indices: np.ndarray  # dataset rows, int64 [N]
    features: np.ndarray | None  # float16 [N, *shape] or float32 prefixes (array or memmap); None: drawn at access
    excluded: int = 0  # images of the split left out because they are in the other set
    send: Send | None = None  # the deployed pipeline, for fresh draws
    repeat: float = 1  # draws averaged per access (stochastic sets only); LIMIT: the averaging limit
    post: Send | None = None
    device: str = "cpu"
    tail: NoiseTail | None = None  # the fast path: ``features`` are prefixes, the tail is drawn at access
    _tmpdir: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def stochastic(self) -> bool:
        """True when every access draws new features."""
        return (self.features is None or self.tail is not None) and not is_limit(self.repeat)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one image's features (without the batch dimension)."""
        if self.features is not None and self.tail is None and self.post is None:
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

    def with_repeat(self, repeat: float) -> "FeatureSet":
        """The repeated-query view: ``repeat`` fresh draws averaged per image (stochastic sets only); ``LIMIT`` on the
        fast path is the noise-free prefix (for the black-box path see :func:`limit_view`)."""
        if not repeat >= 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        if repeat > 1 and not self.stochastic:
            raise ValueError(f"{self.source}: repeated queries only differ for a stochastic pipeline")
        if is_limit(repeat) and self.tail is None:
            raise ValueError(f"{self.source}: the averaging limit of a black-box pipeline is estimated by limit_view()")
        return replace(self, repeat=repeat if is_limit(repeat) else int(repeat))

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
        return replace(self, features=feats, post=None, tail=None, repeat=1, _tmpdir=None)

    def raw_tensor(self, rows: np.ndarray) -> torch.Tensor:
        """Fast path only: the tail's raw draw (before its fixed ``post`` map), averaged over ``repeat``."""
        if self.tail is None or self.features is None:
            raise RunError(f"{self.source}: raw draws need a declared noise tail (the fast path)")
        prefix = torch.from_numpy(np.asarray(self.features[np.asarray(rows)], dtype=np.float32)).to(self.device)
        return self.tail.draw(prefix, self.repeat)

    def prefix_tensor(self, rows: np.ndarray) -> torch.Tensor:
        """Fast path only: the stored noise-free prefixes of ``rows``."""
        if self.tail is None or self.features is None:
            raise RunError(f"{self.source}: prefixes need a declared noise tail (the fast path)")
        return torch.from_numpy(np.asarray(self.features[np.asarray(rows)], dtype=np.float32))

    def feature_tensor(self, rows: np.ndarray) -> torch.Tensor:
        """Float32 features of set rows ``rows`` (a fresh draw, averaged over ``repeat``, when stochastic)."""
        rows = np.asarray(rows)
        with torch.no_grad():
            if self.tail is not None and self.features is not None:
                feats = self.tail.post(self.raw_tensor(rows)).float()
            elif self.features is not None:
                feats = torch.from_numpy(np.asarray(self.features[rows], dtype=np.float32))
            else:
                if self.send is None:
                    raise RunError(f"{self.source}: a stochastic feature set needs the pipeline to draw from")
                images = self.image_tensor(rows).to(self.device)
                feats = self.send(images).float()
                for _ in range(int(self.repeat) - 1):
                    feats = feats + self.send(images).float()
                feats = feats / self.repeat
            if self.post is not None:
                feats = self.post(feats.to(self.device)).float()
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


def limit_view(features: FeatureSet, draws: int, batch_size: int = 256, seed: int = 0, progress: bool = False
               ) -> FeatureSet:
    """The averaging limit of a stochastic set: on the fast path exactly its prefixes (through the tail's fixed map);
    on the black-box path estimated once as the mean of ``draws`` sends of every image, then stored (deterministic)."""
    if features.tail is not None:
        return features.with_repeat(LIMIT)
    if not features.stochastic:
        raise ValueError(f"{features.source}: the averaging limit only differs for a stochastic pipeline")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        view = replace(features, repeat=draws)
        out = [view.feature_tensor(np.arange(i, min(i + batch_size, len(view)))).numpy()
               for i in progress_bar(range(0, len(view), batch_size), desc=f"limit ({draws} draws)",
                                     disable=not progress, leave=False)]
    finally:
        torch.random.set_rng_state(state)
    return replace(features, features=np.concatenate(out).astype(np.float32), send=None, repeat=LIMIT, post=None,
                   _tmpdir=None)


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


def _open_cached(path: Path | None, key: dict[str, Any], trust: bool = False) -> np.ndarray | None:
    """A feature array stored by an earlier extraction with the same ``key`` (read as a memmap), else None;
    ``trust``: the pipeline fingerprint (``probe``) is not compared (a worker reading its parent's extraction)."""
    if path is None:
        return None
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        if trust:
            meta = {**meta, "probe": key.get("probe")}
        if meta != key:
            return None
        return np.load(path, mmap_mode="r")
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return None


def extract_features(pipeline: Pipeline, data: PreparedData, indices: np.ndarray, split: str, source: str,
                     batch_size: int = 256, excluded: int = 0, progress: bool = True,
                     on_batch: Callable[[torch.Tensor, np.ndarray], None] | None = None,
                     cache: Path | None = None, trust_cache: bool = False) -> FeatureSet:
    """Features of dataset rows ``indices`` through the deployed pipeline (:meth:`Pipeline.send`).

    Deterministic pipelines store what is sent (float16); on the fast path (``pipeline.factorisation``) the
    declared prefix is stored (float32) and the set draws the tail at every access; a black-box stochastic
    pipeline gives a set that draws at access (nothing stored). ``on_batch(float32_features, rows)`` sees what is
    sent for every batch (one draw when random), e.g. to score the deployed C. ``cache``: a ``.npy`` path where the
    stored array is kept (with a ``.json`` key beside it: the rows and a fingerprint of the pipeline's output on
    the first image) and read back by a later call with the same rows and fingerprint, so worker processes and
    resumed attacks do not extract again (``trust_cache``: skip the fingerprint, for workers of the extracting
    process, whose thread count may change the last bits).
    """
    device = pipeline.device
    indices = np.asarray(indices, dtype=np.int64)
    fac = pipeline.factorisation if pipeline.stochastic else None
    compute: Callable[[torch.Tensor], torch.Tensor] = fac.prefix if fac is not None else pipeline.send
    stored = fac is not None or not pipeline.stochastic
    pipeline.modules.obfuscator.eval()
    with torch.no_grad():
        probe = compute(images_to_dataset_tensor(data, indices[:1]).to(device))
    fingerprint = np.round(probe.float().cpu().numpy().astype(np.float16).astype(np.float64), 2)
    key = {"rows": len(indices), "rows_digest": hashlib.sha1(indices.tobytes()).hexdigest()[:16],
           "kind": "prefix" if fac is not None else "sent", "tail": fac.tail.describe() if fac is not None else None,
           "probe": hashlib.sha1(fingerprint.tobytes()).hexdigest()[:16] if stored else None}
    features = _open_cached(cache, key, trust_cache) if stored and on_batch is None else None
    tmpdir = None
    if features is None and (stored or on_batch is not None):
        shape = (len(indices), *probe.shape[1:])
        dtype = np.float32 if fac is not None else np.float16
        target: np.ndarray | None = None
        if stored:
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                partial = cache.with_name(f".{cache.name}.partial")
                target = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
            elif int(np.prod(shape)) * np.dtype(dtype).itemsize > IN_MEMORY_LIMIT:
                tmpdir = tempfile.TemporaryDirectory(prefix="deepobf-features-")
                target = np.lib.format.open_memmap(Path(tmpdir.name) / "features.npy", mode="w+", dtype=dtype,
                                                   shape=shape)
            else:
                target = np.empty(shape, dtype=dtype)
        bar = progress_bar(total=len(indices), desc=f"features {split}", unit="img", disable=not progress, leave=False)
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                rows = np.arange(start, min(start + batch_size, len(indices)))
                images = images_to_dataset_tensor(data, indices[rows]).to(device)
                if on_batch is not None:
                    on_batch(pipeline.send(images).float(), rows)
                if target is not None:
                    values = compute(images).float().cpu().numpy().astype(dtype)
                    if not np.isfinite(values).all():
                        raise RunError(f"{source}: features overflow float16 (|value| > 65504); cannot store them")
                    target[rows] = values
                bar.update(len(rows))
        bar.close()
        if target is not None and cache is not None:
            target.flush()
            del target
            partial.replace(cache)
            atomic_write_json(cache.with_suffix(".json"), key)
            target = np.load(cache, mmap_mode="r")
        features = target
    return FeatureSet(source, split, data, indices, features, excluded, send=pipeline.send, device=device,
                      tail=fac.tail if fac is not None else None, _tmpdir=tmpdir)


def check_disjoint(train: FeatureSet, test: FeatureSet) -> None:
    """Raise if any image (or a byte-identical copy) is both in the attackers' training set and the evaluation set."""
    shared = shared_images(train.files(), test.files())
    if shared:
        example = sorted(shared)[0]
        raise RunError(f"attacker training data ({train.source}) shares {len(shared)} image(s) with the evaluation "
                       f"data ({test.source}), e.g. {example}")
