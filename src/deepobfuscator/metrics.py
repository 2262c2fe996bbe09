"""Evaluation metrics with 95% intervals: classification (scikit-learn) and image quality (MS-SSIM, PSNR).

Intervals: Wilson score for proportions (accuracy, re-identification rate), percentile bootstrap
for balanced accuracy and ROC AUC, and a normal interval of the mean for per-image MS-SSIM and PSNR.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import torch

from .losses import MSSSIMSettings, ms_ssim

Z95 = 1.959963984540054
PSNR_MSE_FLOOR = 1e-10  # identical images score 10 * log10(1 / 1e-10) = 100 dB instead of infinity


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (scikit-learn)."""
    from sklearn.metrics import balanced_accuracy_score  # here, not at import: every command would pay ~1 s

    if len(y_true) == 0:
        return float("nan")
    with warnings.catch_warnings():  # a single class in a (bootstrap) sample is fine: its recall is the answer
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(np.asarray(y_true), np.asarray(y_pred)))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC: binary from P(positive) ``[N]``; multi-class from ``[N, K]`` probabilities as the macro
    one-vs-rest mean over classes that have both positives and negatives in ``y_true``; NaN if none do."""
    from sklearn.metrics import roc_auc_score

    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else float("nan")
    per_class = []
    for k in np.unique(y_true):
        positive = y_true == k
        if 0 < positive.sum() < len(y_true) and 0 <= k < scores.shape[1]:
            per_class.append(roc_auc_score(positive, scores[:, k]))
    return float(np.mean(per_class)) if per_class else float("nan")


def majority_rate(y_true: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class of ``y_true``."""
    _, counts = np.unique(np.asarray(y_true), return_counts=True)
    return float(counts.max() / counts.sum()) if len(counts) else float("nan")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaNs when ``n`` is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(statistic: Callable[..., float], arrays: tuple[np.ndarray, ...], n_boot: int = 500,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)`` resampling rows; NaN-valued resamples are dropped."""
    n = len(arrays[0])
    if n == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        value = statistic(*(a[rows] for a in arrays))
        if not math.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def mean_interval(values: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """Normal-approximation interval of the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float(values[0])
    half = z * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB ``[N]`` of NCHW images; MSE is floored at 1e-10 so identical images give 100 dB."""
    if x.shape != y.shape:
        y = y.expand_as(x)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1).clamp(min=PSNR_MSE_FLOOR)
    return (10.0 * torch.log10(data_range ** 2 / mse)).float()


def ms_ssim_per_image(x: torch.Tensor, y: torch.Tensor, settings: MSSSIMSettings) -> torch.Tensor:
    """Standard per-image MS-SSIM ``[N]`` with the run's settings (negative terms clipped to 0)."""
    return ms_ssim(x, y, settings, mapping="clipped")


def _rounded(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _interval(bounds: tuple[float, float]) -> list[float | None]:
    return [_rounded(bounds[0]), _rounded(bounds[1])]


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, n_boot: int = 500,
                          seed: int = 0) -> dict[str, Any]:
    """Accuracy, balanced accuracy, ROC AUC and majority rate with 95% intervals (JSON-ready; NaN -> None)."""
    y_true, y_pred, scores = np.asarray(y_true), np.asarray(y_pred), np.asarray(scores)
    n = len(y_true)
    correct = int((y_true == y_pred).sum())
    return {
        "n": n,
        "accuracy": _rounded(accuracy(y_true, y_pred)),
        "accuracy_ci95": _interval(wilson_interval(correct, n)),
        "balanced_accuracy": _rounded(balanced_accuracy(y_true, y_pred)),
        "balanced_accuracy_ci95": _interval(bootstrap_interval(balanced_accuracy, (y_true, y_pred), n_boot, seed)),
        "auc": _rounded(roc_auc(y_true, scores)),
        "auc_ci95": _interval(bootstrap_interval(roc_auc, (y_true, scores), n_boot, seed)),
        "majority_rate": _rounded(majority_rate(y_true)),
    }


def image_quality_report(ms_ssim_values: np.ndarray, psnr_values: np.ndarray) -> dict[str, Any]:
    """Mean MS-SSIM and PSNR over images with normal 95% intervals (JSON-ready)."""
    ms_ssim_values, psnr_values = np.asarray(ms_ssim_values), np.asarray(psnr_values)
    return {
        "n": int(len(ms_ssim_values)),
        "ms_ssim": _rounded(float(ms_ssim_values.mean())) if len(ms_ssim_values) else None,
        "ms_ssim_ci95": _interval(mean_interval(ms_ssim_values)),
        "psnr": _rounded(float(psnr_values.mean())) if len(psnr_values) else None,
        "psnr_ci95": _interval(mean_interval(psnr_values)),
    }


def rate_report(successes: int, n: int) -> dict[str, Any]:
    """A proportion with its Wilson 95% interval (JSON-ready; None when ``n`` is 0)."""
    return {"rate": _rounded(successes / n) if n else None, "ci95": _interval(wilson_interval(successes, n)), "n": n}
