"""Losses: MS-SSIM settings, metric parity with pytorch_msssim, gradient safety; BCE/CE heads; noise image."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F

from deepobfuscator.config import MSSSIMConfig
from deepobfuscator.data.index import AttributeSpec
from deepobfuscator.losses import (
    attribute_loss, make_noise_image, ms_ssim, msssim_loss, msssim_losses, prediction_entropy_loss, predictions,
    reconstruction_loss, reconstruction_losses, resolve_msssim,
)


def _images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images (blurred noise), so SSIM terms are far from degenerate."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize("size,expected", [((64, 64), (7, 4)), ((32, 32), (7, 3)), ((218, 178), (11, 5))])
def test_auto_settings_fit_the_image(size: tuple[int, int], expected: tuple[int, int]) -> None:
    s = resolve_msssim(MSSSIMConfig(), size)
    assert (s.win_size, s.levels) == expected
    assert min(size) > (s.win_size - 1) * 2 ** (s.levels - 1)
    assert len(s.weights) == s.levels
    x = _images(1, min(size))
    assert torch.isfinite(ms_ssim(x, x.flip(-1), s)).all()  # the settings actually run at that size


def test_explicit_invalid_setting_is_rejected_helpfully() -> None:
    with pytest.raises(ValueError) as err:
        resolve_msssim(MSSSIMConfig(win_size=11, levels=5), (64, 64))
    msg = str(err.value)
    assert "160 px" in msg and "64 px" in msg and "msssim.levels" in msg and "msssim.win_size" in msg
    with pytest.raises(ValueError, match="odd"):
        resolve_msssim(MSSSIMConfig(win_size=8, levels=3), (64, 64))
    with pytest.raises(ValueError, match="weights has 2 entries for 4 scales"):
        resolve_msssim(MSSSIMConfig(weights=[0.5, 0.5]), (64, 64))
    with pytest.raises(ValueError, match="loss_mapping"):
        resolve_msssim(MSSSIMConfig(loss_mapping="relu"), (64, 64))


def test_partially_given_settings_complete_the_other() -> None:
    s = resolve_msssim(MSSSIMConfig(win_size=11), (64, 64))
    assert (s.win_size, s.levels) == (11, 3)
    s = resolve_msssim(MSSSIMConfig(levels=5), (64, 64))
    assert (s.win_size, s.levels) == (3, 5)


# ------------------------------------------------------------------ metric
def test_metric_equals_pytorch_msssim_at_five_scales() -> None:
    s = resolve_msssim(MSSSIMConfig(), (192, 192))
    assert (s.win_size, s.levels) == (11, 5)
    x = _images(2, 192, seed=1)
    y = (0.7 * x + 0.3 * _images(2, 192, seed=2)).clamp(0, 1)
    ours = ms_ssim(x, y, s)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    assert 0.2 < float(ref.min()) < 0.99
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("win,levels", [(7, 4), (3, 3)])
def test_metric_equals_pytorch_msssim_with_fewer_scales(win: int, levels: int) -> None:
    s = resolve_msssim(MSSSIMConfig(win_size=win, levels=levels), (96, 96))
    x = _images(1, 192, seed=4)[..., :170, :181]  # odd sizes exercise the pooling padding
    y = (0.5 * x + 0.5 * _images(1, 192, seed=5)[..., :170, :181]).clamp(0, 1)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False, win_size=win, weights=list(s.weights))
    torch.testing.assert_close(ms_ssim(x, y, s), ref, rtol=0, atol=1e-6)


def test_shared_targets_match_separate_calls() -> None:
    """Phase 0 scores one reconstruction against the image and the noise in one pass: same values, same grads."""
    s = resolve_msssim(MSSSIMConfig(), (64, 64))
    recon, image = _images(2, seed=6), _images(2, seed=7)
    noise = torch.from_numpy(make_noise_image((64, 64), seed=1)).permute(2, 0, 1)[None].float() / 255
    r1 = recon.clone().requires_grad_(True)
    l1, l2 = msssim_losses(r1, [image, noise], s)
    (l2 - l1).backward()
    r2 = recon.clone().requires_grad_(True)
    m1, m2 = msssim_loss(r2, image, s), msssim_loss(r2, noise.expand(2, -1, -1, -1).contiguous(), s)
    (m2 - m1).backward()
    torch.testing.assert_close(torch.stack([l1, l2]), torch.stack([m1, m2]))
    torch.testing.assert_close(r1.grad, r2.grad)
    a, b = reconstruction_losses(recon, [image, noise], "mse", s)
    torch.testing.assert_close(a, F.mse_loss(recon, image))
    with pytest.raises(ValueError, match="does not match"):
        ms_ssim(recon, image[..., :32, :32], s)


def test_identical_images_score_one_and_lose_nothing() -> None:
    s = resolve_msssim(MSSSIMConfig(), (64, 64))
    x = _images(3)
    torch.testing.assert_close(ms_ssim(x, x, s), torch.ones(3))
    torch.testing.assert_close(ms_ssim(x, x, s, mapping="shifted"), torch.ones(3))
    assert abs(float(msssim_loss(x, x.clone(), s))) < 1e-6
    with pytest.raises(ValueError, match="mapping"):
        ms_ssim(x, x, s, mapping="nope")


# ------------------------------------------------------------------ gradients
def _grad(recon: torch.Tensor, target: torch.Tensor, s) -> tuple[float, torch.Tensor]:
    r = recon.clone().requires_grad_(True)
    loss = msssim_loss(r, target, s)
    loss.backward()
    return float(loss.detach()), r.grad


@pytest.mark.parametrize("size", [32, 64])
def test_loss_gradient_is_finite_and_nonzero_for_anticorrelated_images(size: int) -> None:
    s = resolve_msssim(MSSSIMConfig(), (size, size))
    x = _images(2, size)
    loss, grad = _grad(x, 1.0 - x, s)
    assert torch.isfinite(grad).all()
    assert grad.abs().max() > 1e-6
    assert loss > 0.5
    # descending the loss makes the images more alike
    stepped = (x - 0.05 * grad / grad.abs().max()).clamp(0, 1)
    assert float(ms_ssim(stepped, 1.0 - x, s, mapping="shifted").mean()) > 1 - loss
    # the standard (clipped) metric is flat here: why the loss uses the shifted mapping
    r = x.clone().requires_grad_(True)
    ms_ssim(r, 1.0 - x, s).sum().backward()
    assert torch.isfinite(r.grad).all() and float(r.grad.abs().max()) == 0.0


def test_loss_gradient_is_finite_at_identical_and_nonzero_near_identical_images() -> None:
    s = resolve_msssim(MSSSIMConfig(), (64, 64))
    x = _images(2)
    _, grad = _grad(x, x.clone(), s)
    assert torch.isfinite(grad).all()  # the optimum: finite (no 0 ** w NaNs), ~zero by symmetry
    noisy = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    loss, grad = _grad(noisy, x, s)
    assert torch.isfinite(grad).all() and grad.abs().max() > 1e-6
    assert 0.0 < loss < 0.05


def test_noise_target_broadcasts_over_the_batch() -> None:
    s = resolve_msssim(MSSSIMConfig(), (32, 32))
    noise = torch.from_numpy(make_noise_image((32, 32), seed=1)).permute(2, 0, 1)[None].float() / 255
    recon = _images(4, 32)
    one_by_one = torch.stack([msssim_loss(recon[i:i + 1], noise, s) for i in range(4)]).mean()
    torch.testing.assert_close(msssim_loss(recon, noise, s), one_by_one)
    torch.testing.assert_close(reconstruction_loss(recon, noise, "mse", s), F.mse_loss(recon, noise.expand_as(recon)))
    with pytest.raises(ValueError, match="msssim or mse"):
        reconstruction_loss(recon, noise, "l1", s)


# ------------------------------------------------------------------ attribute heads
def test_attribute_loss_binary_and_multiclass() -> None:
    specs = [AttributeSpec("Smiling"), AttributeSpec("driver", 3)]
    logits = torch.tensor([[2.0, 0.1, 0.2, 3.0], [-1.0, 1.0, 0.0, 0.0]])
    targets = torch.tensor([[1, 2], [0, 0]])
    expected = (F.binary_cross_entropy_with_logits(logits[:, 0], targets[:, 0].float())
                + F.cross_entropy(logits[:, 1:], targets[:, 1])) / 2
    torch.testing.assert_close(attribute_loss(logits, targets, specs), expected)
    assert predictions(logits, specs).tolist() == [[1, 2], [0, 0]]


def test_entropy_objective_is_minimal_at_uniform_predictions() -> None:
    specs = [AttributeSpec("Male")]
    uniform = prediction_entropy_loss(torch.zeros(4, 1), specs)
    confident = prediction_entropy_loss(torch.full((4, 1), 6.0), specs)
    assert float(uniform) == pytest.approx(-1.0, abs=1e-5)
    assert float(confident) > float(uniform)


def test_noise_image_is_fixed_by_its_seed() -> None:
    a, b, c = make_noise_image((40, 30), 7), make_noise_image((40, 30), 7), make_noise_image((40, 30), 8)
    assert a.shape == (40, 30, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(a.mean() / 255 - 0.5) < 0.02 and abs(a.std() / 255 - 0.25) < 0.03
