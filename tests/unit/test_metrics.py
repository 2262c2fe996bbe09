"""Metrics against known values: identical images, constant predictors, textbook intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepobfuscator.config import MSSSIMConfig
from deepobfuscator.losses import resolve_msssim
from deepobfuscator.metrics import (
    accuracy, balanced_accuracy, bootstrap_interval, classification_report, image_quality_report, majority_rate,
    mean_interval, ms_ssim_per_image, psnr, rate_report, roc_auc, wilson_interval,
)


@pytest.mark.parametrize("size", [(32, 32), (109, 89)])
def test_identical_images_have_ms_ssim_one(size):
    torch.manual_seed(0)
    x = torch.rand(2, 3, *size)
    values = ms_ssim_per_image(x, x.clone(), resolve_msssim(MSSSIMConfig(), size))
    assert values.shape == (2,)
    assert torch.allclose(values, torch.ones(2), atol=1e-5)


def test_different_images_have_lower_ms_ssim():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert (ms_ssim_per_image(x, y, resolve_msssim(MSSSIMConfig(), (32, 32))) < 0.5).all()


def test_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full((2, 3, 8, 8), 0.1)  # MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(x, y), torch.full((2,), 20.0), atol=1e-4)
    assert torch.allclose(psnr(x, x), torch.full((2,), 100.0))  # MSE floored at 1e-10


def test_constant_predictor_has_balanced_accuracy_half_and_auc_half():
    y = np.array([0] * 70 + [1] * 30)
    constant = np.zeros_like(y)
    assert balanced_accuracy(y, constant) == pytest.approx(0.5)
    assert accuracy(y, constant) == pytest.approx(0.7) == majority_rate(y)
    assert roc_auc(y, np.full(len(y), 0.3)) == pytest.approx(0.5)


def test_auc_perfect_reversed_and_multiclass():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    y3 = np.array([0, 1, 2, 2])
    onehot = np.eye(4)[y3]  # a 4th class that never occurs is ignored
    assert roc_auc(y3, onehot) == 1.0
    assert balanced_accuracy(y3, np.zeros(4, dtype=int)) == pytest.approx(1 / 3)
    assert math.isnan(roc_auc(np.ones(5, dtype=int), np.linspace(0, 1, 5)))


def test_wilson_interval_textbook_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 500), data=st.data())
def test_wilson_interval_contains_estimate(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n + 1e-12
    assert k / n <= hi + 1e-12 <= 1.0 + 2e-12


def test_bootstrap_and_mean_intervals():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, y, 1 - y)
    lo, hi = bootstrap_interval(balanced_accuracy, (y, pred), n_boot=200, seed=1)
    assert lo <= balanced_accuracy(y, pred) <= hi and hi - lo < 0.25
    assert bootstrap_interval(balanced_accuracy, (y, pred), n_boot=200, seed=1) == (lo, hi)
    lo, hi = mean_interval(np.array([1.0, 2.0, 3.0]))
    assert lo < 2.0 < hi


def test_reports_are_json_ready():
    y = np.array([0, 1, 1, 0, 1])
    report = classification_report(y, y, y.astype(float), n_boot=20)
    assert report["accuracy"] == 1.0 and report["balanced_accuracy"] == 1.0 and report["auc"] == 1.0
    assert report["majority_rate"] == 0.6 and report["n"] == 5 and len(report["accuracy_ci95"]) == 2
    single = classification_report(np.ones(3, int), np.ones(3, int), np.ones(3), n_boot=5)
    assert single["auc"] is None
    quality = image_quality_report(np.array([1.0, 0.5]), np.array([30.0, 20.0]))
    assert quality["ms_ssim"] == 0.75 and quality["psnr"] == 25.0
    assert rate_report(0, 0)["rate"] is None and rate_report(1, 4)["rate"] == 0.25
