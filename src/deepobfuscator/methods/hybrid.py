"""**Hybrid** (Osia et al.): Encoder features -> PCA (fitted on the train split) -> Laplace noise.

O is the Encoder's (stage 1, plain L(C)); it is frozen afterwards. Before stage 2 the PCA is fitted on
the *flattened* features of (at most ``max_fit_images``) train-split images, and each coefficient is
mapped to [0, 1] by its train-split [p, 100-p] percentile range (``clip_percentile``) and clipped, so
one coefficient's L1 sensitivity is 1 and the Laplace mechanism adds ``Lap(sensitivity / epsilon)``
per coefficient (epsilon-DP per released coefficient, like the DP baseline per pixel). What the
phone sends is the noisy coefficient vector; the deployed pipeline maps it back to O's feature shape
with the PCA inverse transform (a fixed linear map, so attackers see exactly the noisy coefficients),
and the service classifier C is retrained on those noisy features in stage 3 (``epochs_adversarial``
epochs, starting from the Encoder's C; no MLP head is needed).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import RunConfig
from ..data import Batch, BatchLoader, PreparedData
from ..training.checkpoint import file_metadata
from ..training.trainer import Trainer
from ..models.factorised import Factorisation, LaplaceTail, laplace_like
from .params import MethodParams, param, search, validate_params
from .registry import Method, register_method

STATE_FILE = "hybrid_pca.safetensors"


class PCALaplace(nn.Module):
    """Project features on the PCA basis, scale to [0, 1], add Laplace noise, map back to O's shape."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                 feature_shape: tuple[int, int, int], scale: float) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("components", components.float())  # [k, D], orthonormal rows
        self.register_buffer("lo", lo.float())
        self.register_buffer("span", (hi.float() - lo.float()).clamp(min=1e-8))
        self.feature_shape = tuple(int(v) for v in feature_shape)
        self.scale = float(scale)
        self.noise_enabled = True  # off only to check the deterministic part (:meth:`noise_split`)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """Clipped, [0, 1]-scaled PCA coefficients ``[N, k]`` (before noise)."""
        coeffs = (feats.flatten(1) - self.mean) @ self.components.T
        return ((coeffs - self.lo) / self.span).clamp(0.0, 1.0)

    def release(self, feats: torch.Tensor) -> torch.Tensor:
        """What the phone sends: noisy scaled coefficients ``[N, k]``."""
        z = self.project(feats)
        return z + laplace_like(z, self.scale) if self.noise_enabled else z

    def reconstruct(self, released: torch.Tensor) -> torch.Tensor:
        """Released coefficients -> feature maps shaped like O's output (PCA inverse transform)."""
        flat = (released * self.span + self.lo) @ self.components + self.mean
        return flat.view(-1, *self.feature_shape)

    def unreconstruct(self, features: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`reconstruct` on its image (the components are orthonormal rows)."""
        return ((features.flatten(1) - self.mean) @ self.components.T - self.lo) / self.span

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Features -> noisy features of the same shape, as the deployed pipeline produces them."""
        return self.reconstruct(self.release(feats))

    @contextlib.contextmanager
    def noise_off(self) -> Iterator[None]:
        """Within the block, no Laplace noise is added (to check the deterministic part)."""
        before, self.noise_enabled = self.noise_enabled, False
        try:
            yield
        finally:
            self.noise_enabled = before

    def noise_split(self) -> Factorisation:
        """What is sent = :meth:`reconstruct` (:meth:`project` + Laplace noise of the deployed scale)."""
        tail = LaplaceTail(self.scale, self.reconstruct, self.unreconstruct, channels=int(self.components.shape[0]))
        return Factorisation(self.project, tail, self.noise_off)

    def save(self, path: Path) -> None:
        """Write buffers and settings to a safetensors file (atomically)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tensors["hi"] = (tensors["lo"] + tensors["span"]).contiguous()
        del tensors["span"]
        save_file(tensors, str(tmp), metadata={"feature_shape": json.dumps(list(self.feature_shape)),
                                               "scale": repr(self.scale)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "PCALaplace":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Hybrid PCA state missing (was the run trained to the end?)")
        meta = file_metadata(path)
        t = load_file(str(path))
        return cls(t["mean"], t["components"], t["lo"], t["hi"], tuple(json.loads(meta["feature_shape"])),
                   float(meta["scale"]))


class HybridParams(MethodParams):
    """Hybrid's parameters."""

    epsilon: float = param(0.5, "privacy budget per released coefficient", gt=0, tune=search(0.1, 20.0, log=True))
    sensitivity: float = param(1.0, "L1 sensitivity of one [0, 1]-scaled coefficient", gt=0)
    n_components: int = param(64, "PCA components released", ge=1, tune=search(8, 256, log=True))
    clip_percentile: float = param(1.0, "coefficients are scaled to [0, 1] by their [p, 100-p] percentile range",
                                   ge=0, lt=50)
    max_fit_images: int = param(4000, "train-split images the PCA is fitted on (seeded subset)", ge=1)


def hybrid_params(cfg: RunConfig) -> dict[str, Any]:
    """Validated Hybrid parameters from ``cfg.params``."""
    return validate_params(HybridParams, cfg.params, "hybrid").model_dump()


@torch.no_grad()
def fit_pca_laplace(encode: Callable[[torch.Tensor], torch.Tensor], data: PreparedData, params: dict[str, Any],
                    seed: int, batch_size: int = 256, split: str = "train") -> PCALaplace:
    """Fit PCA and the clipping ranges on (a seeded subsample of) ``split`` only; return the transform."""
    from sklearn.decomposition import PCA

    idx = np.asarray(data.split[split])
    if len(idx) > params["max_fit_images"]:
        idx = np.sort(np.random.default_rng(seed).choice(idx, params["max_fit_images"], replace=False))
    loader = BatchLoader(data.images, data.task, data.private, idx, batch_size)
    feats = [encode(batch.images).float().cpu() for batch in loader.epoch(0)]
    x = torch.cat(feats).flatten(1).numpy().astype(np.float64)
    shape = tuple(feats[0].shape[1:])
    k = min(params["n_components"], x.shape[0], x.shape[1])
    pca = PCA(n_components=k, svd_solver="randomized" if k < min(x.shape) else "full", random_state=seed).fit(x)
    coeffs = pca.transform(x)
    q = params["clip_percentile"]
    lo, hi = np.percentile(coeffs, q, axis=0), np.percentile(coeffs, 100.0 - q, axis=0)
    return PCALaplace(torch.from_numpy(pca.mean_), torch.from_numpy(pca.components_), torch.from_numpy(lo),
                      torch.from_numpy(hi), shape, params["sensitivity"] / params["epsilon"])


class HybridTrainer(Trainer):
    """Stage 1 plain (shared with Encoder); PCA+Laplace fitted before stage 2; stage 3 retrains C only."""

    def __post_init__(self) -> None:
        super().__post_init__()
        hybrid_params(self.cfg)

    @classmethod
    def cache_signature(cls, cfg: RunConfig, stage: int) -> dict[str, Any]:
        """Stage 1 is the Encoder's; later stages depend on the Hybrid parameters."""
        return {} if stage == 0 else {"hybrid": dict(cfg.params)}

    def ensure_fitted(self) -> PCALaplace:
        """Fit (once) the PCA on train-split features of the frozen O and save it in the run directory."""
        if self.modules.feature_transform is None:
            self.modules.set_trainable()
            # no feature transform yet: encode() is O after the (absent) input transform
            transform = fit_pca_laplace(lambda x: self.modules.encode(x.to(self.device)), self.data,
                                        hybrid_params(self.cfg), self.cfg.train.seed, self.cfg.train.eval_batch_size)
            if self.sync.rank == 0:
                transform.save(self.run.path / STATE_FILE)
            self.modules.feature_transform = transform.to(self.device)
        return self.modules.feature_transform  # type: ignore[return-value]

    def stage_step(self, stage: int) -> Callable[[Batch, int], dict[str, float]]:
        """Fit the PCA before the first stage that uses released features."""
        if stage >= 1:
            self.ensure_fitted()
        return super().stage_step(stage)

    def step_cycle(self, batch: Batch, step: int) -> dict[str, float]:
        """Stage 3: only the service classifier C is retrained, on the noisy projected features."""
        return {"phase": 3, **self.step_classifier(batch)}

    def fit(self) -> dict[str, Any]:
        """Train; make sure the PCA exists even when stages 2-3 have no epochs."""
        last = super().fit()
        self.ensure_fitted()
        return last


def load_fitted(cfg: RunConfig, run_path: Path) -> PCALaplace | None:
    """The run's fitted PCA + Laplace transform; None until training has fitted it."""
    path = Path(run_path) / STATE_FILE
    return PCALaplace.load(path) if path.is_file() else None


def _hybrid(cfg: RunConfig) -> None:
    cfg.privacy.defend = "none"  # stage 3 only retrains C (epochs_adversarial epochs)


HYBRID = register_method(Method(
    "hybrid", "Hybrid", "Encoder features -> PCA fitted on train -> Laplace noise per coefficient; C retrained",
    params=HybridParams,
    configure=_hybrid, trainer_cls=HybridTrainer, feature_transform=load_fitted))
