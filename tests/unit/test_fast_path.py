"""The judge's exact fast path for stochastic pipelines: declared noise tails, their check against the black-box
pipeline, m-averages and the averaging limit, the known-noise attacker, and the suite's jobs (resume, workers)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp, norm

from deepobfuscator.attacks import ATTACKERS, AttackSettings, run_attack
from deepobfuscator.attacks import features
from deepobfuscator.attacks.base import AttackContext, AttackData, parse_repeat
from deepobfuscator.attacks.features import FeatureSet, Pipeline, extract_features, limit_view
from deepobfuscator.attacks.kernel import KnownNoiseAttacker
from deepobfuscator.config import MSSSIMConfig, preset
from deepobfuscator.data import AttributeSpec, PreparedData
from deepobfuscator.losses import resolve_msssim
from deepobfuscator.methods.hybrid import PCALaplace
from deepobfuscator.models.bottleneck import BottleneckObfuscator
from deepobfuscator.models.factorised import LIMIT, Factorisation, GaussianTail, LaplaceTail
from deepobfuscator.runs import RunError
from deepobfuscator.training.modules import build_modules

QUICK = dict(recon_epochs=1, attr_epochs=1, batch_size=16, inversion_images=3, inversion_steps=3, reid_images=8,
             grid_images=4, bootstrap=10, constant_steps=3, mlp_hidden=16)


# ------------------------------------------------------------------------------------------ tails
def test_gaussian_m_averages_have_std_sigma_over_sqrt_m_and_the_limit_is_the_prefix():
    torch.manual_seed(0)
    tail = GaussianTail(torch.tensor([0.5, 2.0]))
    prefix = torch.randn(4000, 2, 2, 2)
    for m in (1, 8):
        noise = tail.draw(prefix, m) - prefix
        std = noise.transpose(0, 1).reshape(2, -1).std(1)
        assert torch.allclose(std, tail.sigma / math.sqrt(m), rtol=0.03)
        assert noise.mean().abs() < 0.01
    # one draw at std sigma / sqrt(8) has the distribution of the mean of 8 single draws
    direct = (tail.draw(prefix[:500], 8) - prefix[:500])[:, 1].flatten()
    averaged = (torch.stack([tail.draw(prefix[:500]) for _ in range(8)]).mean(0) - prefix[:500])[:, 1].flatten()
    assert ks_2samp(direct.numpy(), averaged.numpy()).pvalue > 1e-3
    assert torch.equal(tail.draw(prefix, LIMIT), prefix)
    assert torch.allclose(tail.variance(8), torch.tensor([0.25, 4.0]) / 8)


def test_laplace_m_averages_and_the_hybrid_post_map_round_trip():
    torch.manual_seed(0)
    tail = LaplaceTail(0.5, channels=3)
    prefix = torch.zeros(20000, 3)
    for m in (1, 4):
        assert (tail.draw(prefix, m) - prefix).var().item() == pytest.approx(2 * 0.25 / m, rel=0.05)
    assert torch.equal(tail.draw(prefix, LIMIT), prefix)
    components = torch.linalg.qr(torch.randn(12, 3)).Q.T  # orthonormal rows
    pca = PCALaplace(torch.randn(12), components, torch.zeros(3), torch.ones(3), (3, 2, 2), scale=0.5)
    split = pca.noise_split()
    z = split.prefix(torch.randn(5, 3, 2, 2))
    assert torch.allclose(split.tail.unpost(split.tail.post(z)), z, atol=1e-5)


def test_repeat_counts_parse_inf():
    assert parse_repeat("inf") == LIMIT and parse_repeat("8") == 8
    with pytest.raises(ValueError, match="repeat"):
        parse_repeat("0")
    assert AttackSettings().repeats(True) == [1, 8, LIMIT] and AttackSettings().repeats(False) == [1]
    assert AttackSettings().as_dict()["repeat"] is None
    assert AttackSettings(repeat=[1, LIMIT]).as_dict()["repeat"] == [1, "inf"]


# ------------------------------------------------------------------------------------------ the check
def _bottleneck_pipeline(sigma: float = 1.0) -> Pipeline:
    cfg = preset("tiny")
    cfg.model.bottleneck_channels, cfg.model.bottleneck_pool, cfg.model.bottleneck_sigma = 2, 1, sigma
    modules = build_modules(cfg, [AttributeSpec("Smiling")], [AttributeSpec("Male")], seed=0)
    modules.set_trainable()
    return Pipeline(cfg, modules)


def test_an_honest_declaration_passes_and_m_inf_is_the_deterministic_part():
    pipeline = _bottleneck_pipeline()
    probe = torch.rand(16, 3, 32, 32)
    assert pipeline.detect_stochastic(probe[:2])
    record = pipeline.declare(probe)
    assert record["path"] == "fast" and record["check"]["passed"]
    assert record["check"]["deterministic_max_abs_diff"] < 1e-5 and record["check"]["ks_pvalue"] > 1e-3
    with torch.no_grad():
        mean = pipeline.modules.obfuscator.mean(probe)
        assert torch.equal(pipeline.factorisation.tail.draw(mean, LIMIT), mean)


def test_a_pipeline_that_lies_about_its_noise_or_its_prefix_falls_back_to_the_black_box(monkeypatch):
    pipeline = _bottleneck_pipeline()
    probe = torch.rand(16, 3, 32, 32)
    pipeline.detect_stochastic(probe[:2])
    obf = pipeline.modules.obfuscator
    honest = BottleneckObfuscator.noise_split

    def smaller_noise(self):
        split = honest(self)
        return Factorisation(split.prefix, GaussianTail(split.tail.sigma * 0.85), split.noise_off)

    monkeypatch.setattr(BottleneckObfuscator, "noise_split", smaller_noise)
    record = pipeline.declare(probe)
    assert record["path"] == "black-box" and not record["check"]["passed"] and pipeline.factorisation is None
    assert "noise differs" in record["reason"]

    def shifted_prefix(self):
        split = honest(self)
        return Factorisation(lambda x: split.prefix(x) + 0.01, split.tail, split.noise_off)

    monkeypatch.setattr(BottleneckObfuscator, "noise_split", shifted_prefix)
    record = pipeline.declare(probe)
    assert record["path"] == "black-box" and "deterministic part differs" in record["reason"]
    monkeypatch.setattr(BottleneckObfuscator, "noise_split", honest)
    assert pipeline.declare(probe, fast=False)["path"] == "black-box"  # --black-box
    assert obf.bottleneck.noise_enabled  # the check leaves the pipeline's noise on


def _image_data(n: int, size: int = 32) -> PreparedData:
    rng = np.random.default_rng(0)
    return PreparedData(index=None, images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                        task_specs=[AttributeSpec("Smiling")], private_specs=[AttributeSpec("Male")],
                        task=rng.integers(0, 2, (n, 1)), private=rng.integers(0, 2, (n, 1)), split={})


def test_fast_and_black_box_feature_sets_draw_the_same_distribution(tmp_path: Path):
    pipeline = _bottleneck_pipeline()
    data = _image_data(24)
    rows = np.arange(24)
    pipeline.detect_stochastic(features.images_to_dataset_tensor(data, rows[:2]))
    pipeline.declare(features.images_to_dataset_tensor(data, rows[:16]))
    fast = extract_features(pipeline, data, rows, "test", "t", progress=False, cache=tmp_path / "f.npy")
    assert fast.tail is not None and fast.features.dtype == np.float32 and (tmp_path / "f.json").is_file()
    pipeline.factorisation = None
    slow = extract_features(pipeline, data, rows, "test", "t", progress=False)
    assert slow.features is None and slow.stochastic and fast.stochastic
    torch.manual_seed(0)
    for m in (1, 4):
        a = torch.stack([fast.with_repeat(m).feature_tensor(rows) for _ in range(8)])
        b = torch.stack([slow.with_repeat(m).feature_tensor(rows) for _ in range(8)])
        assert ks_2samp((a - a.mean(0)).flatten().numpy(), (b - b.mean(0)).flatten().numpy()).pvalue > 1e-3
        assert torch.allclose(a.mean(0), b.mean(0), atol=4 * 2 / math.sqrt(8 * m))
    limit = limit_view(fast, 1).feature_tensor(rows)
    with torch.no_grad():
        assert torch.allclose(limit, pipeline.modules.obfuscator.mean(fast.image_tensor(rows)), atol=1e-6)
    estimate = limit_view(slow, 64).feature_tensor(rows)  # the black-box path estimates the limit by averaging
    assert (estimate - limit).abs().mean() < 0.2
    reread = extract_features(pipeline, data, rows, "test", "t", progress=False, cache=tmp_path / "f.npy")
    assert reread.features is None  # a black-box pipeline never reads a cached prefix


# ------------------------------------------------------------------------------------------ known-noise attacker
def _two_gaussians(n: int, a: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0's noise-free means at -a, class 1's at +a (one value per image, a 1x1x1 map)."""
    labels = np.random.default_rng(seed).integers(0, 2, n)
    return (np.where(labels == 1, a, -a).astype(np.float32).reshape(n, 1, 1, 1)), labels


@pytest.mark.parametrize("m", [1, 4])
def test_known_noise_attacker_reaches_the_bayes_accuracy(m):
    a, sigma = 0.5, 1.0
    tail = GaussianTail(torch.tensor([sigma]))
    parts = []
    for n, seed in ((600, 0), (400, 1), (6000, 2)):
        means, labels = _two_gaussians(n, a, seed)
        data = PreparedData(index=None, images=np.zeros((n, 2, 2, 3), np.uint8),
                            task_specs=[AttributeSpec("Smiling")], private_specs=[AttributeSpec("Male")],
                            task=np.zeros((n, 1), np.int64), private=labels.reshape(n, 1), split={})
        parts.append(FeatureSet("t", "s", data, np.arange(n), means, tail=tail).with_repeat(m))
    attack = AttackData(parts[0], parts[1], parts[2], np.arange(0), np.arange(0), [AttributeSpec("Male")],
                        [AttributeSpec("Smiling")])
    ctx = AttackContext(Pipeline(preset("tiny"), None), AttackSettings(bootstrap=0), resolve_msssim(MSSSIMConfig(),
                        (32, 32)), progress=False)
    attacker = KnownNoiseAttacker()
    assert attacker.unavailable(attack) is None
    record = attacker.fit(attack, ctx, seed=0)
    result = attacker.evaluate(attack, ctx, seed=0).record["results"]["Male"]
    bayes = norm.cdf(a * math.sqrt(m) / sigma)  # 0.691 for one query, 0.841 for the mean of four
    assert result["balanced_accuracy"] == pytest.approx(bayes, abs=0.025)
    assert record["Male"]["smoothing"] == 0.0  # the exact noise kernel wins on validation
    deterministic = FeatureSet("t", "s", parts[0].data, np.arange(3), np.zeros((3, 1), np.float16))
    assert "declares its noise" in attacker.unavailable(AttackData(deterministic, deterministic, deterministic,
                                                                   np.arange(0), np.arange(0), [], []))


# ------------------------------------------------------------------------------------------ jobs: resume, workers
class FailingAttacker:
    """An attribute attacker whose fit fails (module level, so a spawned worker process can rebuild it)."""

    name, kind, description, floor = "failing", "attribute", "fails on purpose", False

    def settings(self, ctx):
        return {}

    def fit(self, data, ctx, seed):
        raise ValueError("boom in fit")

    def evaluate(self, data, ctx, seed):  # pragma: no cover - never reached
        raise AssertionError

    def state(self):
        return None


def test_a_killed_attack_resumes_where_it_stopped(run_copy: Path, monkeypatch, fitted_attackers: list[str]):
    from deepobfuscator.attacks import suite

    settings = AttackSettings(**QUICK, attackers=["mirror", "linear", "mlp"])
    finished: list[str] = []
    real_run_job = suite.run_job

    def killed_at_mlp(job, *args, **kwargs):
        if job.name == "mlp":
            raise KeyboardInterrupt  # the attack is killed while mlp trains
        finished.append(job.name)
        return real_run_job(job, *args, **kwargs)

    monkeypatch.setattr(suite, "run_job", killed_at_mlp)
    with pytest.raises(KeyboardInterrupt):
        run_attack(run_copy, settings, out=run_copy / "killed.json", retrain=True, progress=False)
    assert finished and "mlp" not in finished
    monkeypatch.setattr(suite, "run_job", real_run_job)
    fitted_attackers.clear()
    result = run_attack(run_copy, settings, out=run_copy / "killed.json", progress=False)
    assert fitted_attackers == ["attack mlp Male"]  # only the unfinished attacker trains again
    assert set(result["privacy"]["Male"]["per_attacker"]) == {"linear", "mlp"}


def test_worker_failures_surface_as_errors_naming_the_job(run_copy: Path):
    ATTACKERS.add("failing", FailingAttacker, "fails on purpose (test)")
    try:
        with pytest.raises(RunError, match=r"failing\.s0.*boom in fit"):
            run_attack(run_copy, AttackSettings(**QUICK, attackers=["failing", "linear"], workers=2),
                       out=run_copy / "failing.json", progress=False)
    finally:
        ATTACKERS.pop("failing")
    assert not (run_copy / "failing.json").exists()  # no attack.json with a missing row


def test_workers_give_the_same_records_as_one_process(run_copy: Path):
    one = run_attack(run_copy, AttackSettings(**QUICK, attackers=["linear", "constant", "mirror", "inversion"]),
                     out=run_copy / "one.json", retrain=True, progress=False)
    two = run_attack(run_copy, AttackSettings(**QUICK, attackers=["linear", "constant", "mirror", "inversion"],
                                              workers=2),
                     out=run_copy / "two.json", retrain=True, progress=False)
    assert two["timing"]["workers"] == 2 and one["timing"]["workers"] == 1
    for name in ("mirror", "constant"):
        assert two["reconstruction"]["per_attacker"][name]["ms_ssim"] == pytest.approx(
            one["reconstruction"]["per_attacker"][name]["ms_ssim"], abs=2e-3)
    assert two["privacy"]["Male"]["balanced_accuracy"] == pytest.approx(one["privacy"]["Male"]["balanced_accuracy"],
                                                                        abs=0.03)
    # the inversion is scored on its query subset beside the decoder it refines, never ranked with the decoders
    sub = two["reconstruction"]["subset_attackers"]["inversion"]
    assert sub["n"] == 3 and two["reconstruction"]["best_attacker"] != "inversion"
    saved = json.loads((run_copy / "two.json").read_text())
    assert saved["budget"]["name"] == "full" and "jobs" in saved["timing"]


def test_warm_starts_chain_each_learned_attacker_through_the_repeat_counts():
    from deepobfuscator.attacks.schedule import Job, chain_warm_starts, dependencies

    jobs = [Job(name, m, seed, kind) for name, kind in (("vgg", "attribute"), ("mirror", "reconstruction"),
                                                         ("constant", "reconstruction"))
            for m in (1, 8, LIMIT) for seed in (0, 1)]
    chained = {j.stem: j for j in chain_warm_starts(jobs)}
    assert chained["vgg@m8.s1"].warm_from == "vgg.s1" and chained["vgg@minf.s1"].warm_from == "vgg@m8.s1"
    assert chained["mirror@minf.s0"].warm_from == "mirror@m8.s0" and chained["mirror.s0"].warm_from == ""
    assert chained["constant@m8.s0"].warm_from == ""  # nothing learned to start from
    needs = dependencies(list(chained.values()))
    assert needs[chained["vgg@minf.s0"]] == {chained["vgg@m8.s0"]} and not needs[chained["vgg.s0"]]
    with pytest.raises(RunError, match="vgg.s0"):
        dependencies([chained["vgg@m8.s0"]])
