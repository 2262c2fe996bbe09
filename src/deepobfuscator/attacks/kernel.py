"""The known-noise attacker: the posterior of a private label given what is sent, under the declared noise.

A pipeline on the fast path declares its noise (``mean(x) + sigma * eps``, ...). An attacker who knows it (the
obfuscator ships on every phone) and has labelled images of their own can compute, for an observed feature vector
``y`` averaged over ``m`` queries, the likelihood of each class as the average noise density of ``y`` around the
noise-free prefixes of that class's training images: a kernel classifier whose kernel *is* the noise. With
class-conditional likelihoods (equal priors) the decision maximises balanced accuracy; with the exact kernel it is
the Bayes rule under the empirical distribution of prefixes. Optional Gaussian smoothing (bandwidth chosen on the
attacker's own validation images; needed at the averaging limit, where there is no noise) guards against a prefix
distribution that is too sparsely sampled. Nothing is trained: it runs in seconds.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..data import AttributeSpec
from ..losses import predictions
from ..models.factorised import NoiseTail, squared_distances, is_limit
from .attribute import class_priors, score_logits, tune_offset, within_classes
from .base import AttackContext, AttackData, Evaluation, attacker_seed
from .features import FeatureSet

SMOOTHING = (0.0, 0.05, 0.1, 0.2, 0.4)  # extra Gaussian kernel std, in units of the prefixes' own per-value std
QUERY_BATCH = 512


def class_log_likelihoods(log_kernel: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``[Q, K]`` log of the mean kernel value over each class's training points (-inf for an absent class)."""
    out = torch.full((log_kernel.shape[0], classes), -torch.inf, dtype=log_kernel.dtype)
    for k in range(classes):
        members = labels == k
        if members.any():
            out[:, k] = torch.logsumexp(log_kernel[:, members], dim=1) - np.log(int(members.sum()))
    return out


def as_logits(loglik: torch.Tensor, spec: AttributeSpec) -> torch.Tensor:
    """Class log-likelihoods -> the attribute's logits (binary: the log-likelihood ratio)."""
    loglik = torch.nan_to_num(loglik, neginf=-1e30).float()
    if spec.binary:
        return (loglik[:, 1] - loglik[:, 0]).unsqueeze(1)
    return loglik


class KernelPosterior:
    """Class log-likelihoods of observations under the declared tail around labelled prefixes (optionally smoothed)."""

    def __init__(self, tail: NoiseTail, prefixes: torch.Tensor, labels: dict[str, np.ndarray], m: float,
                 smoothing: float = 0.0) -> None:
        self.tail, self.m, self.smoothing = tail, m, float(smoothing)
        self.shape = tuple(prefixes.shape[1:])
        self.prefixes = prefixes.flatten(1).double()
        self.scale = self.prefixes.std(0).clamp(min=1e-6)  # per-value spread of the prefixes
        self.labels = {name: torch.from_numpy(np.asarray(v, dtype=np.int64)) for name, v in labels.items()}
        if is_limit(m) and smoothing <= 0:
            raise ValueError("at the averaging limit (no noise) the kernel needs smoothing > 0")

    def _per_value_variance(self) -> torch.Tensor:
        channels = self.tail.variance(self.m).double()
        per = (torch.ones(1, *self.shape, dtype=torch.float64)
               * channels.view(1, -1, *([1] * (len(self.shape) - 1)))).flatten()
        return per + (self.smoothing * self.scale) ** 2

    def log_kernel(self, observed: torch.Tensor) -> torch.Tensor:
        """``[Q, M]`` log kernel between flattened raw observations and the training prefixes."""
        observed = observed.flatten(1).double()
        if self.smoothing == 0.0:
            return self.tail.log_kernel(observed, self.prefixes, self.m).double()
        std = self._per_value_variance().sqrt()
        return -0.5 * squared_distances(observed / std, self.prefixes / std)

    def log_likelihoods(self, observed: torch.Tensor, spec: AttributeSpec) -> torch.Tensor:
        """``[Q, K]`` class log-likelihoods of ``spec`` for raw observations (batched over queries)."""
        out = [class_log_likelihoods(self.log_kernel(observed[i:i + QUERY_BATCH]), self.labels[spec.name],
                                     spec.num_classes) for i in range(0, len(observed), QUERY_BATCH)]
        return torch.cat(out) if out else torch.zeros(0, spec.num_classes, dtype=torch.float64)


def _all_raw(features: FeatureSet, batch_size: int) -> torch.Tensor:
    return torch.cat([features.raw_tensor(np.arange(i, min(i + batch_size, len(features))))
                      for i in range(0, len(features), batch_size)]).cpu()


def _log_loss(loglik: torch.Tensor, labels: np.ndarray) -> float:
    """Mean negative log posterior (equal priors) of the true classes."""
    log_post = torch.log_softmax(torch.nan_to_num(loglik, neginf=-1e30), dim=1)
    return float(-log_post[torch.arange(len(labels)), torch.from_numpy(np.asarray(labels, dtype=np.int64))].mean())


class KnownNoiseAttacker:
    """Kernel classifier with the declared noise as its kernel, on the training images' noise-free prefixes."""

    name = "known_noise"
    kind = "attribute"
    floor = False
    description = "posterior under the declared noise: kernel classifier on the training images' noise-free means"

    def __init__(self) -> None:
        self.posteriors: dict[str, KernelPosterior] = {}
        self.offsets: dict[str, torch.Tensor] = {}

    def unavailable(self, data: AttackData) -> str | None:
        """Runs only where the pipeline's noise is declared and checked (the fast path)."""
        if data.train.tail is None or data.train.features is None:
            return "known_noise needs a pipeline that declares its noise (deterministic or black-box pipeline)"
        return None

    def settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result."""
        s = ctx.settings
        return {"smoothing_grid": list(SMOOTHING), "max_train_images": s.max_train_images,
                "val_fraction": s.val_fraction, "bootstrap": s.bootstrap, "decision": "validation-tuned"}

    def fit(self, data: AttackData, ctx: AttackContext, seed: int) -> dict[str, Any]:
        """Choose the smoothing per private attribute by the validation log loss of the posterior."""
        started = time.perf_counter()
        torch.manual_seed(attacker_seed(seed, self.name, "val"))
        train, val = data.train, data.val
        prefixes = torch.cat([train.prefix_tensor(np.arange(i, min(i + 4096, len(train))))
                              for i in range(0, len(train), 4096)])
        labels = {spec.name: train.labels(spec.name) for spec in data.private_specs}
        observed = _all_raw(val, ctx.settings.eval_batch_size)
        grid = [h for h in SMOOTHING if h > 0 or not is_limit(train.repeat)]
        out: dict[str, Any] = {}
        for spec in data.private_specs:
            losses = {}
            for h in grid:
                posterior = KernelPosterior(train.tail, prefixes, labels, train.repeat, h)
                losses[h] = _log_loss(posterior.log_likelihoods(observed, spec), val.labels(spec.name))
            best = min(grid, key=lambda h: (losses[h], h))
            posterior = KernelPosterior(train.tail, prefixes, labels, train.repeat, best)
            self.posteriors[spec.name] = posterior
            val_logits = as_logits(posterior.log_likelihoods(observed, spec), spec)
            priors = class_priors(train.labels(spec.name), spec)
            self.offsets[spec.name] = tune_offset(val_logits, val.labels(spec.name), priors, spec)
            out[spec.name] = {"smoothing": best, "val_log_loss": {str(h): round(v, 6) for h, v in losses.items()},
                              "train_images": len(train), "val_images": len(val),
                              "decision_offset": [round(float(v), 6) for v in self.offsets[spec.name]],
                              "epochs": None, "seconds": round(time.perf_counter() - started, 3)}
        return out

    def evaluate(self, data: AttackData, ctx: AttackContext, seed: int) -> Evaluation:
        """Score on fresh (m-averaged) draws of the evaluation images."""
        if not self.posteriors:
            raise ValueError(f"attacker '{self.name}' is not fitted")
        torch.manual_seed(attacker_seed(seed, self.name, "test"))
        test = data.test
        observed = _all_raw(test, ctx.settings.eval_batch_size)
        results = {}
        for spec in data.private_specs:
            posterior = self.posteriors[spec.name]
            logits = as_logits(posterior.log_likelihoods(observed, spec), spec) - self.offsets[spec.name]
            labels = test.labels(spec.name)
            report = score_logits(logits, labels, spec, ctx.settings.bootstrap, attacker_seed(seed, self.name))
            pred = predictions(logits, [spec])[:, 0].numpy()
            results[spec.name] = {**report, "within": within_classes(pred, labels, test, data.task_specs)}
        return Evaluation({"results": results})

    def state(self) -> None:
        """Nothing learned beyond the training prefixes (not saved)."""
        return None
