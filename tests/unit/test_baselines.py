"""Baselines: noise scales, DP sensitivity, Hybrid PCA fitted on train only, NoPeek's dCor, registry, cache keys."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deepobfuscator.methods import attach_transforms, configure, get_method
from deepobfuscator.experiments.cache import stage_key
from deepobfuscator.methods.hybrid import HybridTrainer, PCALaplace, fit_pca_laplace, hybrid_params
from deepobfuscator.methods.noise import GaussianPixelNoise, InputNoiseTrainer, LaplacePixelMechanism, laplace_like
from deepobfuscator.dependence import distance_correlation
from deepobfuscator.methods.nopeek import NoPeekTrainer
from deepobfuscator.config import ConfigError, preset
from deepobfuscator.training import Trainer


def _grey(n: int = 8, size: int = 64) -> torch.Tensor:
    return torch.full((n, 3, size, size), 0.5)


def test_noisy_adds_gaussian_noise_with_sigma_40_of_255() -> None:
    torch.manual_seed(0)
    cfg = configure(preset("tiny"), "noisy")
    transform = get_method("noisy").input_transform(cfg)
    assert isinstance(transform, GaussianPixelNoise) and transform.sigma == pytest.approx(40 / 255)
    noise = transform(_grey()) - 0.5  # mid-grey: clipping to [0, 1] is 3.2 sigma away
    assert noise.std().item() == pytest.approx(40 / 255, rel=0.02)
    assert abs(noise.mean().item()) < 0.002
    clipped = transform(torch.zeros(2, 3, 16, 16))
    assert clipped.min().item() >= 0.0 and clipped.max().item() <= 1.0


@pytest.mark.parametrize("epsilon", [0.1, 0.2, 0.5, 0.9])
def test_dp_laplace_scale_is_sensitivity_over_epsilon(epsilon: float) -> None:
    torch.manual_seed(1)
    cfg = preset("tiny")
    cfg.params = {"epsilon": epsilon}
    transform = get_method("dp").input_transform(configure(cfg, "dp"))
    assert isinstance(transform, LaplacePixelMechanism) and transform.scale == pytest.approx(1.0 / epsilon)
    noise = transform(_grey()) - 0.5
    # maximum-likelihood Laplace scale = mean |x|; std = sqrt(2) * scale
    assert noise.abs().mean().item() == pytest.approx(1.0 / epsilon, rel=0.02)
    assert noise.std().item() == pytest.approx(np.sqrt(2) / epsilon, rel=0.03)
    assert abs(noise.median().item()) < 0.02 / epsilon


def test_dp_clips_pixels_to_unit_range_before_the_mechanism() -> None:
    torch.manual_seed(2)
    mech = LaplacePixelMechanism(epsilon=0.5)
    out = mech(torch.full((8, 3, 32, 32), 7.0))  # out-of-range input: clipped to 1 first (sensitivity 1)
    assert out.median().item() == pytest.approx(1.0, abs=0.05)
    assert LaplacePixelMechanism(epsilon=0.5, clip=True)(_grey()).max().item() <= 1.0


def test_laplace_like_is_differentiable_noise_of_the_right_shape() -> None:
    x = torch.zeros(1000, 10)
    noise = laplace_like(x, 2.0)
    assert noise.shape == x.shape and torch.isfinite(noise).all()


def test_configure_applies_each_method() -> None:
    enc = configure(preset("tiny"), "encoder")
    assert enc.train.epochs_adversarial == 0 and enc.privacy.defend == "none"
    assert configure(preset("tiny"), "pan").privacy.reconstruction_loss == "mse"
    assert configure(preset("tiny"), "nopeek").params == {"weight": 1.0}
    hyb = configure(preset("tiny"), "hybrid")
    assert hyb.params["epsilon"] == 0.5 and hyb.train.epochs_adversarial > 0
    assert get_method("dp").trainer_cls is InputNoiseTrainer
    assert get_method("nopeek").trainer_cls is NoPeekTrainer
    assert get_method("hybrid").trainer_cls is HybridTrainer
    assert get_method("deepobfuscator").trainer_cls is Trainer
    bad = preset("tiny")
    bad.params = {"epsilom": 0.5}
    with pytest.raises(ConfigError, match="epsilom"):
        configure(bad, "dp")
    with pytest.raises(ConfigError, match="did you mean 'nopeek'"):
        get_method("nopeak")
    neg = preset("tiny")
    neg.params = {"epsilon": -1}
    with pytest.raises(ConfigError, match="method.epsilon"):
        get_method("dp").input_transform(configure(neg, "dp"))


def test_distance_correlation_properties() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    assert distance_correlation(x, x).item() == pytest.approx(1.0, abs=1e-4)
    assert distance_correlation(x, 3 * x + 1).item() == pytest.approx(1.0, abs=1e-4)
    assert distance_correlation(x, torch.randn(256, 2)).item() < 0.25
    assert distance_correlation(x, x ** 2).item() > 0.4  # non-linear dependence is seen
    xs = torch.randn(16, 3, 8, 8, requires_grad=True)
    distance_correlation(xs, torch.tanh(xs[:, :2])).backward()
    assert torch.isfinite(xs.grad).all()


def test_pca_laplace_noise_scale_and_shape() -> None:
    torch.manual_seed(3)
    d, k = 48, 6
    comps = torch.linalg.qr(torch.randn(d, k))[0].T
    t = PCALaplace(torch.zeros(d), comps, -torch.ones(k), torch.ones(k), (3, 4, 4), scale=1 / 0.5)
    feats = torch.randn(4000, 3, 4, 4) * 0.1
    z = t.project(feats)
    assert z.min() >= 0 and z.max() <= 1  # clipped to the unit range: sensitivity 1 per coefficient
    noise = t.release(feats) - z
    assert noise.abs().mean().item() == pytest.approx(2.0, rel=0.03)
    assert t(feats).shape == feats.shape
    exact = t.reconstruct(z)  # no noise: the inverse transform reproduces the projection
    assert torch.allclose(t.project(exact), z, atol=1e-5)


def test_hybrid_pca_is_fitted_on_the_train_split_only(tiny_cfg) -> None:
    from deepobfuscator.data import PreparedData, prepare_data
    from deepobfuscator.training.modules import build_modules

    cfg = configure(tiny_cfg, "hybrid")
    data, _ = prepare_data(cfg.data, progress=False)
    modules = build_modules(cfg, data.task_specs, data.private_specs)
    modules.set_trainable()
    params = {**hybrid_params(cfg), "n_components": 8}
    fit = lambda d: fit_pca_laplace(modules.obfuscator, d, params, seed=0, batch_size=32)  # noqa: E731

    def altered(rows: np.ndarray) -> PreparedData:
        images = np.array(data.images)
        images[rows] = np.random.default_rng(0).integers(0, 256, images[rows].shape, dtype=np.uint8)
        return dataclasses.replace(data, images=images)

    base = fit(data)
    other = fit(altered(np.concatenate([data.split["val"], data.split["test"]])))
    for name in ("mean", "components", "lo", "span"):
        assert torch.allclose(getattr(base, name), getattr(other, name), atol=1e-5), name
    moved = fit(altered(data.split["train"][:10]))
    assert not torch.allclose(base.mean, moved.mean, atol=1e-5)


def test_pipeline_transforms_are_what_attacks_see(tmp_path) -> None:
    from deepobfuscator.attacks.features import obfuscate
    from deepobfuscator.data.index import AttributeSpec
    from deepobfuscator.training.modules import build_modules

    images = torch.rand(4, 3, 32, 32)
    for name in ("encoder", "noisy", "dp"):
        cfg = configure(preset("tiny"), name)
        modules = build_modules(cfg, [AttributeSpec("Smiling", 2)], [AttributeSpec("Male", 2)])
        attach_transforms(cfg, modules, tmp_path)
        modules.set_trainable()
        with torch.no_grad():
            plain = modules.obfuscator(images)
            sent = obfuscate(cfg, modules, images)
        assert sent.shape == plain.shape
        assert torch.equal(sent, plain) == (name == "encoder")
    shape = plain.shape[1:]
    d = int(np.prod(shape))
    modules.feature_transform = PCALaplace(torch.zeros(d), torch.eye(d)[:5], -torch.ones(5), torch.ones(5), tuple(shape), 2.0)
    cfg = configure(preset("tiny"), "encoder")
    with torch.no_grad():
        assert modules.encode(images).shape == plain.shape


def test_pretrain_cache_keys_share_exactly_the_identical_stages() -> None:
    def key(method: str, stage: int, **privacy) -> str | None:
        cfg = configure(preset("tiny"), method)
        for k, v in privacy.items():
            setattr(cfg.privacy, k, v)
        return stage_key(cfg, stage, get_method(method).trainer_cls)

    dobf0, dobf1 = key("deepobfuscator", 0), key("deepobfuscator", 1)
    assert key("deepobfuscator", 0, lambda1=10.0) == dobf0 and key("deepobfuscator", 1, lambda1=10.0) == dobf1
    assert key("deepobfuscator", 1, defend="reconstruction") == dobf1
    assert key("pan", 0) == dobf0 and key("pan", 1) != dobf1  # PAN's attackers train on MSE
    assert key("hybrid", 0) == dobf0 and key("hybrid", 1) != dobf1
    # the Encoder trains the adversarial stage's epochs in stage 1 (a fair reference), so it shares nothing with the
    # paper's method on this schedule; on one without adversarial epochs its stages are the same
    enc0 = key("encoder", 0)
    assert enc0 != dobf0
    flat = preset("tiny")
    flat.train.epochs_adversarial = 0
    plain = stage_key(configure(flat, "deepobfuscator"), 0)
    flat.params = {"deploy": "last"}  # (by default the Encoder deploys its best validation epoch: test_selection)
    assert stage_key(configure(flat, "encoder"), 0, get_method("encoder").trainer_cls) == plain
    assert key("noisy", 0) != enc0 and key("dp", 0) not in (enc0, key("noisy", 0))
    assert key("nopeek", 0) != enc0
    longer = configure(preset("tiny"), "encoder")
    longer.train.epochs_pretrain += 1
    assert stage_key(longer, 0) != enc0

    class Custom(Trainer):
        pass

    assert stage_key(configure(preset("tiny"), "encoder"), 0, Custom) is None  # unknown trainers never share
