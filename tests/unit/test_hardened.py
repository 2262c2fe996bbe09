"""The hardened defence's parts: noisy bottleneck, dependence penalties, adversary ensemble, audit rule."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from deepobfuscator.config import ConfigError, RunConfig, preset
from deepobfuscator.data.index import AttributeSpec
from deepobfuscator.dependence import (
    conditional_dependence, distance_correlation, hsic, label_matrix, unbiased_dcor2, within_class_dependence,
    within_class_spread,
)
from deepobfuscator.experiments import load_sweep
from deepobfuscator.losses import attribute_loss, prediction_entropy_loss
from deepobfuscator.methods import METHODS, configure, hardened, method_trainer, resolved_config, train_run
from deepobfuscator.runs import RunDir
from deepobfuscator.models import Obfuscator
from deepobfuscator.models.bottleneck import BottleneckObfuscator, NoisyBottleneck, deterministic
from deepobfuscator.training.adversaries import AdversaryEnsemble, build_adversary
from deepobfuscator.training.trainer import format_metrics
from deepobfuscator.training.audit import select_epoch
from deepobfuscator.training.modules import build_modules, feature_shape, run_obfuscator

MALE = AttributeSpec("Male", 2)


# --------------------------------------------------------------------------- bottleneck
def test_bottleneck_shape_and_fresh_noise_of_the_right_std_in_train_and_eval() -> None:
    torch.manual_seed(0)
    bn = NoisyBottleneck(8, 3, pool=2, sigma=0.5)
    x = torch.randn(64, 8, 8, 8)
    for mode in (True, False):  # training and deployment (eval) alike
        bn.train(mode)
        a, b = bn(x), bn(x)
        assert a.shape == (64, 3, 4, 4)
        assert not torch.allclose(a, b), "noise must be drawn afresh on every call"
        bn.eval()
        noise = bn(x) - bn.mean(x)
        assert noise.std().item() == pytest.approx(0.5, rel=0.05)
        assert noise.mean().abs().item() < 0.03


def test_bottleneck_batchnorm_fixes_the_scale_and_deterministic_context_removes_noise() -> None:
    torch.manual_seed(0)
    bn = NoisyBottleneck(4, 2, sigma=1.0).train()
    mean = bn.mean(torch.randn(256, 4, 6, 6) * 50.0)  # a huge signal cannot drown the noise
    assert mean.std(dim=(0, 2, 3)).tolist() == pytest.approx([1.0, 1.0], rel=0.02)
    obf = BottleneckObfuscator(Obfuscator(0.0625), NoisyBottleneck(8, 1, pool=2, sigma=1.0)).eval()
    images = torch.rand(4, 3, 32, 32)
    with deterministic(obf):
        assert torch.equal(obf(images), obf(images))
        assert torch.equal(obf(images), obf.mean(images))
    assert not torch.equal(obf(images), obf(images))
    assert obf.feature_hw((32, 32)) == (4, 4)


def test_learned_sigma_per_channel_and_vib_kl() -> None:
    torch.manual_seed(0)
    bn = NoisyBottleneck(4, 2, sigma=1.0, learn_sigma=True)
    with torch.no_grad():
        bn.log_sigma.copy_(torch.log(torch.tensor([0.2, 2.0])))
    bn.eval()
    x = torch.randn(512, 4, 4, 4)
    noise = bn(x) - bn.mean(x)
    assert noise.std(dim=(0, 2, 3)).tolist() == pytest.approx([0.2, 2.0], rel=0.05)
    # KL(N(0, 1) || N(0, 1)) = 0; it grows as the mean moves or sigma shrinks, and sigma gets a gradient
    with torch.no_grad():
        bn.log_sigma.zero_()
    assert bn.kl(torch.zeros(8, 2, 3, 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert bn.kl(torch.ones(8, 2, 3, 3)).item() == pytest.approx(0.5 * 2 * 9, rel=1e-5)
    with torch.no_grad():
        bn.log_sigma.fill_(math.log(0.1))
    kl = bn.kl(torch.zeros(8, 2, 3, 3))
    assert kl.item() > 0
    kl.backward()
    assert bn.log_sigma.grad is not None and (bn.log_sigma.grad < 0).all()  # larger sigma lowers the KL


def test_bottleneck_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="norm"):
        NoisyBottleneck(4, 2, norm="layernorm")
    with pytest.raises(ValueError, match="channels"):
        NoisyBottleneck(4, 0)
    with pytest.raises(ValueError, match="sigma"):
        NoisyBottleneck(4, 1, sigma=0.0, learn_sigma=True)


def test_bottleneck_code_sends_k_values_repeated_over_the_map_with_noise_per_position() -> None:
    from types import SimpleNamespace

    from deepobfuscator.attacks.features import check_factorisation
    torch.manual_seed(0)
    obf = BottleneckObfuscator(Obfuscator(0.0625), NoisyBottleneck(8, 2, pool=2, sigma=1.0, code=4,
                                                                    sent_hw=(4, 4))).train()
    images = torch.rand(16, 3, 32, 32)
    mean = obf.mean(images)
    assert mean.shape == (16, 2, 4, 4)
    assert torch.equal(mean, mean[:, :, :1, :1].expand_as(mean)), "the code is the same at every position"
    assert mean[:, :, 0, 0].std(0).tolist() == pytest.approx([1.0, 1.0], rel=0.05)  # BatchNorm fixes its scale
    obf.eval()
    noise = obf(images) - obf.mean(images)
    assert not torch.equal(noise[:, :, 0, 0], noise[:, :, 1, 1]), "the noise is drawn per position"
    mean[:, 0].sum().backward()  # the whole head trains
    assert all(p.grad is not None for p in obf.bottleneck.parameters())
    # the declared factorisation (the code's map + the per-position Gaussian) passes the attack suite's check
    with torch.no_grad():
        assert check_factorisation(SimpleNamespace(send=obf), obf.noise_split(), images)["passed"]


def test_bottleneck_code_needs_the_sent_size_and_leaves_the_plain_bottleneck_unchanged() -> None:
    with pytest.raises(ValueError, match="sent map"):
        NoisyBottleneck(8, 1, code=4)
    with pytest.raises(ValueError, match="code >= 1"):
        NoisyBottleneck(8, 1, code=-1, sent_hw=(4, 4))
    assert set(NoisyBottleneck(8, 1).state_dict()) == {"conv.weight", "conv.bias", "log_sigma", "norm.running_mean",
                                                      "norm.running_var", "norm.num_batches_tracked"}
    cfg = preset("tiny")
    cfg.model.bottleneck_channels, cfg.model.bottleneck_pool, cfg.model.bottleneck_sigma = 1, 1, 1.0
    cfg.model.bottleneck_code = 4
    assert feature_shape(cfg) == (1, 8, 8)


def test_bottleneck_code_depth_adds_3x3_layers_before_the_code_and_keeps_the_sent_shape() -> None:
    from deepobfuscator.models.bottleneck import build_run_obfuscator
    torch.manual_seed(0)
    deep = NoisyBottleneck(8, 2, sigma=1.0, code=4, sent_hw=(4, 4), depth=2)
    convs = [m for m in deep.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(8, 16, (3, 3)), (16, 16, (3, 3)),
                                                                               (16, 4, (1, 1))]
    feats = torch.rand(5, 8, 4, 4)
    mean = deep.train().mean(feats)
    assert mean.shape == (5, 2, 4, 4) and torch.equal(mean, mean[:, :, :1, :1].expand_as(mean))
    mean.sum().backward()
    assert all(p.grad is not None for p in deep.parameters())
    with pytest.raises(ValueError, match="depth"):
        NoisyBottleneck(8, 1, depth=1)  # no code
    with pytest.raises(ValueError, match="code_depth"):
        build_run_obfuscator(0.0625, True, 0, code_depth=2)
    cfg = preset("tiny")
    cfg.model.bottleneck_channels, cfg.model.bottleneck_pool, cfg.model.bottleneck_sigma = 1, 1, 1.0
    cfg.model.bottleneck_code, cfg.model.bottleneck_code_depth = 4, 3
    assert feature_shape(cfg) == (1, 8, 8)


def test_a_vgg_code_head_is_cs_architecture_on_the_phone_and_keeps_the_sent_shape() -> None:
    from deepobfuscator.models.bottleneck import BottleneckObfuscator, build_run_obfuscator
    from deepobfuscator.models.vgg import VGGClassifier
    torch.manual_seed(0)
    obf = build_run_obfuscator(0.0625, True, 3, pool=2, sigma=1.0, code=16, image_size=(64, 64), code_head="vgg")
    assert isinstance(obf, BottleneckObfuscator) and isinstance(obf.bottleneck.head, VGGClassifier)
    assert obf.bottleneck.head.head[-1].out_features == 3  # k values, computed from O's unpooled 16x16 map
    images = torch.rand(6, 3, 64, 64)
    obf.eval()
    mean = obf.mean(images)
    assert mean.shape == (6, 3, 8, 8) and torch.equal(mean, mean[:, :, :1, :1].expand_as(mean))
    sent = obf(images)
    assert sent.shape == mean.shape and not torch.equal(sent, mean)  # noise per position on top
    obf.train()
    obf.mean(images).sum().backward()
    assert all(p.grad is not None for p in obf.bottleneck.head.parameters())
    with pytest.raises(ValueError, match="bottleneck_code_head"):
        build_run_obfuscator(0.0625, True, 3, code=16, image_size=(64, 64), code_head="resnet")
    with pytest.raises(ValueError, match="needs a code"):
        build_run_obfuscator(0.0625, True, 3, code=0, image_size=(64, 64), code_head="vgg")
    with pytest.raises(ValueError, match="no model.bottleneck_code_depth"):
        build_run_obfuscator(0.0625, True, 3, code=16, image_size=(64, 64), code_depth=2, code_head="vgg")
    cfg = preset("tiny")
    cfg.model.bottleneck_channels, cfg.model.bottleneck_pool, cfg.model.bottleneck_sigma = 1, 1, 1.0
    cfg.model.bottleneck_code, cfg.model.bottleneck_code_head = 4, "vgg"
    assert feature_shape(cfg) == (1, 8, 8)


def test_a_vgg_code_head_starts_from_the_warm_head_as_its_logits_and_logit_differences() -> None:
    from deepobfuscator.methods.hardened import seed_code_head
    from deepobfuscator.models.vgg import VGGClassifier
    torch.manual_seed(0)
    specs = [AttributeSpec("Smiling", 2), AttributeSpec("behaviour", 3)]  # 1 + 3 logits; width rule 1 + 2 values
    warm = VGGClassifier(8, (8, 8), 4, 0.0625, fc_width=16).eval()
    head = VGGClassifier(8, (8, 8), 3, 0.0625, fc_width=16).eval()
    feats = torch.randn(5, 8, 8, 8)
    assert seed_code_head(head, warm, specs)
    logits, code = warm(feats), head(feats)
    assert torch.allclose(code[:, 0], logits[:, 0], atol=1e-5)
    assert torch.allclose(code[:, 1:], logits[:, 1:3] - logits[:, 3:], atol=1e-5)
    rebuilt = torch.softmax(torch.cat([code[:, 1:], torch.zeros(5, 1)], 1), 1)  # the code fixes the prediction
    assert torch.allclose(rebuilt, torch.softmax(logits[:, 1:], 1), atol=1e-5)
    other = VGGClassifier(8, (8, 8), 5, 0.0625, fc_width=16)
    before = [p.clone() for p in other.parameters()]
    assert not seed_code_head(other, warm, specs)  # 5 values: not the rule's width, nothing changed
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))


def test_hardened_with_a_vgg_code_head_seeds_it_after_the_warm_epochs(tiny_cfg, tmp_path) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.model.bottleneck_code_head = "vgg"
    tiny_cfg.params = {"warm_epochs": 1, "audit": False}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 2, 0
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    trainer.fit()
    records = [r for r in trainer.run.read_metrics() if r["stage"] == "pretrain"]
    assert records[0]["code_seeded"] is True and "code_seeded" not in records[1]


def test_a_run_killed_in_a_warm_epoch_resumes_with_its_warm_head(tiny_cfg, tmp_path) -> None:
    from deepobfuscator.training import StopTraining
    from deepobfuscator.training.checkpoint import latest_checkpoint
    from safetensors.torch import load_file
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"warm_epochs": 2, "audit": False}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 3, 0

    def kill(trainer, pos) -> None:
        if pos.stage == 0 and pos.epoch == 1 and pos.step == 1:
            raise StopTraining

    first = method_trainer(tiny_cfg, tmp_path / "h", progress=False, on_step=kill)
    with pytest.raises(StopTraining):
        first.fit()
    saved = load_file(str(latest_checkpoint(first.run.checkpoints) / "modules.safetensors"))
    assert any(k.startswith("aux.") for k in saved)
    resumed = method_trainer(tiny_cfg, tmp_path / "h", resume=True, progress=False)
    for name, tensor in resumed.aux.state_dict().items():
        assert torch.equal(tensor, saved[f"aux.{name}"])  # the head it had, not a fresh one
    assert resumed.aux_optimizer.state_dict()["state"]  # and its optimiser's moments
    # a checkpoint without the head (written before it was kept) still resumes
    ckpt = latest_checkpoint(first.run.checkpoints) / "modules.safetensors"
    from safetensors.torch import save_file
    save_file({k: v for k, v in saved.items() if not k.startswith("aux.")}, str(ckpt))
    optim = latest_checkpoint(first.run.checkpoints) / "optim.pt"
    extra = torch.load(optim, weights_only=True)
    extra["optimizers"].pop("aux")
    torch.save(extra, optim)
    old = method_trainer(tiny_cfg, tmp_path / "h", resume=True, progress=False)
    old.fit()
    assert not any(k.startswith("aux.") for k in load_file(str(old.run.final)))  # scaffolding, not deployed


def test_run_modules_are_built_on_the_sent_shape() -> None:
    cfg = preset("tiny")
    cfg.model.bottleneck_channels, cfg.model.bottleneck_pool, cfg.model.bottleneck_sigma = 2, 1, 1.0
    assert feature_shape(cfg) == (2, 8, 8)
    modules = build_modules(cfg, [AttributeSpec("Smiling", 2)], [MALE])
    feats = modules.obfuscator(torch.rand(3, 3, 32, 32))
    assert feats.shape == (3, 2, 8, 8)
    assert modules.classifier(feats).shape == (3, 1)
    assert modules.reconstructor(feats).shape == (3, 3, 32, 32)


# --------------------------------------------------------------------------- dependence penalties
@pytest.mark.parametrize("measure", [unbiased_dcor2, hsic])
@pytest.mark.parametrize("n", [32, 400])
def test_dependence_independent_is_near_zero_and_identical_is_high(measure, n: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(n, 5)
    assert abs(measure(x, torch.randn(n, 3)).item()) < (0.1 if n == 32 else 0.02)  # unbiased even on a batch
    assert measure(x, x).item() == pytest.approx(1.0, abs=1e-6)
    labels = (x[:, 0] > 0).long()
    assert measure(x, label_matrix(labels)).item() > 0.15
    xs = x.clone().requires_grad_(True)
    measure(xs, label_matrix(labels)).backward()
    assert torch.isfinite(xs.grad).all() and xs.grad.abs().sum() > 0


def test_within_class_dependence_ignores_what_the_intended_label_implies() -> None:
    torch.manual_seed(0)
    n = 600
    task = torch.randint(0, 2, (n, 1))
    # private agrees with task 80% of the time: features carrying only the task label are dependent on the
    # private label overall, but not within either task class
    private = torch.where(torch.rand(n, 1) < 0.8, task, 1 - task)
    only_task = task.float() + 0.1 * torch.randn(n, 4)
    assert unbiased_dcor2(only_task, label_matrix(private)).item() > 0.2
    for measure in ("dcor", "hsic"):
        assert abs(within_class_dependence(only_task, private, task, measure).item()) < 0.02
        leaky = torch.cat([task.float(), private.float()], 1) + 0.1 * torch.randn(n, 2)
        assert within_class_dependence(leaky, private, task, measure).item() > 0.5
    with pytest.raises(ValueError, match="measure"):
        within_class_dependence(only_task, private, task, "mine")


def test_within_class_dependence_skips_classes_without_private_variation() -> None:
    feats = torch.randn(10, 3)
    assert within_class_dependence(feats, torch.zeros(10, 1, dtype=torch.long), torch.zeros(10, 1)).item() == 0.0


def test_conditional_dependence_on_images_penalises_what_goes_beyond_the_intended_label() -> None:
    """The image term: features that are a function of the intended label only score about 0 within each
    class; features that copy part of the image score high; a batch-size mismatch is an error."""
    torch.manual_seed(0)
    n = 400
    task = torch.randint(0, 2, (n, 1))
    images = torch.rand(n, 3, 8, 8) + task.float().view(n, 1, 1, 1)  # the images differ by class too
    only_task = task.float().repeat(1, 4) + 0.1 * torch.randn(n, 4)
    copies = images[:, 0, :2, :2].reshape(n, 4)
    for measure in ("dcor", "hsic"):
        assert abs(conditional_dependence(only_task, images, task, measure).item()) < 0.03
        assert conditional_dependence(copies, images, task, measure).item() > 0.1
    assert unbiased_dcor2(only_task, images.reshape(n, -1)).item() > 0.3  # unconditionally, the label is dependent
    with pytest.raises(ValueError, match="batch sizes"):
        conditional_dependence(only_task, images[:-1], task)


def test_within_class_spread_is_zero_on_class_means_and_one_without_class_structure() -> None:
    """The spread term: features that are a function of the intended label score 0, features with no class
    structure about 1, a mixture in between (the between-class share of the variance is what it rewards); rows
    are grouped by the joint value of several intended labels; a singleton class adds no spread."""
    torch.manual_seed(0)
    n = 2000
    task = torch.randint(0, 2, (n, 2))
    label_only = (task[:, :1].float() * 3 - task[:, 1:].float()).view(n, 1, 1, 1).expand(n, 2, 4, 4)
    noise = torch.randn(n, 2, 4, 4)
    assert within_class_spread(label_only, task).item() < 1e-6
    assert abs(within_class_spread(noise, task).item() - 1.0) < 0.02
    mixed = within_class_spread(label_only + noise, task).item()
    assert 0.1 < mixed < 0.5  # noise variance 1 against a between-class variance of about 2.5
    single = torch.tensor([[0], [0], [0], [1]])
    assert within_class_spread(torch.tensor([[0.0], [0.0], [0.0], [5.0]]), single).item() == 0.0
    with pytest.raises(ValueError, match="batch sizes"):
        within_class_spread(noise, task[:-1])


def test_spread_term_enters_the_pretraining_loss(tmp_path, tiny_cfg) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"adversaries": [], "aux_epochs": 0, "warm_epochs": 0, "mu": 0.0, "mu_image": 0.0,
                         "mu_spread": 1.0, "spread_ramp_epochs": 0}
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    batch = next(iter(trainer.data.loader("train", 16).epoch(0)))
    out = trainer.step_pretrain(batch, 0)
    assert "spread" in out and "dep" not in out and 0.0 <= out["spread"] <= 1.0
    tiny_cfg.params = {"mu_spread": -1}
    with pytest.raises(ConfigError, match="mu_spread"):
        hardened.params(tiny_cfg)


def test_image_term_enters_the_pretraining_loss(tmp_path, tiny_cfg) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"adversaries": [], "aux_epochs": 0, "warm_epochs": 0, "mu": 0.0, "mu_image": 2.0,
                         "image_pool": 2, "image_ramp_epochs": 0, "mu_spread": 0.0}
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    batch = next(iter(trainer.data.loader("train", 16).epoch(0)))
    out = trainer.step_pretrain(batch, 0)
    assert "dep_img" in out and "dep" not in out and math.isfinite(out["dep_img"])
    tiny_cfg.params = {"image_pool": 0}
    with pytest.raises(ConfigError, match="image_pool"):
        hardened.params(tiny_cfg)


def test_plain_sample_distance_correlation_is_biased_on_small_batches() -> None:
    """Why the penalty uses the bias-corrected form: plain dCor of independent batches of 32 is far from 0."""
    torch.manual_seed(0)
    x, z = torch.randn(32, 5), torch.randn(32, 3)
    assert distance_correlation(x, z).item() > 0.4 > abs(unbiased_dcor2(x, z).item())


# --------------------------------------------------------------------------- adversary ensemble
def _ensemble(restart_every: int, against: str = "max") -> AdversaryEnsemble:
    torch.manual_seed(0)
    names = ["vgg", "resnet", "mlp"]
    members = [build_adversary(n, (2, 8, 8), 1, width=0.0625, fc_width=16) for n in names]
    return AdversaryEnsemble(members, names, [MALE], restart_every=restart_every, against=against)


def test_ensemble_restarts_one_member_on_schedule_round_robin() -> None:
    ens = _ensemble(restart_every=3)
    feats, private = torch.randn(16, 2, 8, 8), torch.randint(0, 2, (16, 1))
    before = [[p.detach().clone() for p in m.parameters()] for m in ens.members]
    for _ in range(9):
        ens.step(feats, private)
    assert ens.restarts == [(3, 0), (6, 1), (9, 2)]
    ens2 = _ensemble(restart_every=0)
    for _ in range(9):
        ens2.step(feats, private)
    assert ens2.restarts == []
    # a restarted member starts from fresh weights (not the ones it had, not the trained ones)
    restarted = list(ens.members[2].parameters())[0]
    assert not torch.equal(restarted, before[2][0])
    assert not torch.equal(restarted, list(ens2.members[2].parameters())[0])


def test_ensemble_objective_targets_the_strongest_member_and_only_moves_features() -> None:
    ens = _ensemble(restart_every=0)
    feats = torch.randn(32, 2, 8, 8)
    private = (feats[:, 0].mean((1, 2)) > 0).long().unsqueeze(1)
    for _ in range(30):
        ens.step(feats, private)
    grads = [p.grad.clone() for m in ens.members for p in m.parameters()]
    x = feats.clone().requires_grad_(True)
    loss, info = ens.obfuscator_loss(x, private)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, (p for m in ens.members for p in m.parameters())))
    assert -1.0 <= loss.item() <= 0.0  # the bounded entropy objective
    with torch.no_grad():
        bces = [attribute_loss(m(feats), private, [MALE]).item() for m in ens.members]
        strongest = ens.members[min(range(3), key=bces.__getitem__)]
        assert loss.item() == pytest.approx(prediction_entropy_loss(strongest(feats), [MALE]).item(), abs=1e-6)
    assert info["L_adv_min"] == pytest.approx(min(bces), abs=1e-5)
    mean_ens = AdversaryEnsemble(ens.members, ens.names, [MALE], against="mean")
    with torch.no_grad():
        mean_loss, _ = mean_ens.obfuscator_loss(feats, private)
        expected = sum(prediction_entropy_loss(m(feats), [MALE]).item() for m in ens.members) / 3
    assert mean_loss.item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="objective"):
        AdversaryEnsemble(ens.members, ens.names, [MALE], objective="hinge")


# --------------------------------------------------------------------------- audit rule
def test_audit_picks_lowest_leakage_within_the_utility_margin() -> None:
    history = [
        {"stage": "pretrain", "epoch": 4, "utility": 0.90, "leakage": 0.70},
        {"stage": "adversarial", "epoch": 1, "utility": 0.895, "leakage": 0.66},
        {"stage": "adversarial", "epoch": 2, "utility": 0.85, "leakage": 0.55},  # too costly
        {"stage": "adversarial", "epoch": 3, "utility": 0.892, "leakage": 0.62},
        {"stage": "adversarial", "epoch": 4, "utility": 0.91, "leakage": 0.62},  # tie: more useful wins
    ]
    choice = select_epoch(history, 0.90, 0.01)
    assert (choice["stage"], choice["epoch"]) == ("adversarial", 4)
    assert choice["eligible"] == 4
    assert select_epoch(history, 0.90, 0.06)["epoch"] == 2
    none_ok = select_epoch(history[2:3], 0.90, 0.01)
    assert none_ok["eligible"] == 0 and none_ok["epoch"] == 2
    with pytest.raises(ValueError):
        select_epoch([], 0.9, 0.01)


# --------------------------------------------------------------------------- configuration
def test_configure_fills_bottleneck_and_turns_off_stage_3_without_adversaries() -> None:
    cfg = preset("celeba-cpu")
    cfg.params = {"adversaries": []}
    hardened.configure(cfg)
    # the width is chosen from the intended attributes when the run is created (-1 until then)
    assert (cfg.model.bottleneck_channels, cfg.model.bottleneck_pool, cfg.model.bottleneck_sigma) == (-1, 2, 1.0)
    assert cfg.model.bottleneck_code == 16  # the code head is the default; an explicit value (0: none) is kept
    kept = preset("celeba-cpu")
    kept.model.bottleneck_code = 0
    hardened.configure(kept)
    assert kept.model.bottleneck_code == 0
    assert cfg.train.epochs_adversarial == 0 and cfg.privacy.defend == "none"
    tiny = preset("tiny")  # 32 px: pooling would leave C's VGG blocks a 4x4 map
    tiny.params = {"adversaries": ["mlp"]}
    hardened.configure(tiny)
    assert tiny.model.bottleneck_pool == 1 and tiny.train.epochs_adversarial == 1
    bad = RunConfig()
    bad.params = {"against": "median"}
    with pytest.raises(ConfigError, match="against"):
        hardened.configure(bad)
    bad.params = {"warm_epochs": bad.train.epochs_pretrain + bad.train.epochs_adversarial + bad.train.epochs_attacker}
    with pytest.raises(ConfigError, match="warm_epochs"):
        hardened.configure(bad)


def test_hardened_is_a_registered_method_trained_by_its_own_trainer() -> None:
    method = METHODS.get("hardened")
    assert method.trainer_cls is hardened.HardenedTrainer and method.defaults == hardened.DEFAULTS
    assert method.input_transform is None and method.feature_transform is None  # the noise lives inside O
    cfg = configure(preset("tiny"), "hardened")
    assert cfg.method == "hardened" and cfg.model.bottleneck_channels == -1 and cfg.params["mu"] == 1.0
    with pytest.raises(ConfigError, match="hardened takes no parameter"):
        bad = preset("tiny")
        bad.params = {"sigma": 1.0}
        configure(bad, "hardened")


def test_preset_celeba_cpu_hardened_records_its_configuration() -> None:
    cfg = preset("celeba-cpu-hardened")
    assert cfg.method == "hardened" and cfg.model.bottleneck_channels != 0 and cfg.model.bottleneck_sigma > 0
    p = hardened.params(cfg)
    assert p["mu"] > 0 and p["mu_image"] > 0 and p["mu_spread"] > 0
    for ramp in ("image_ramp_epochs", "spread_ramp_epochs", "sigma_ramp_epochs"):
        assert p[ramp] < cfg.train.epochs_pretrain - p["warm_epochs"]


def test_hardened_benchmark_sweep_file_configures_every_run() -> None:
    sweep = load_sweep(Path(__file__).resolve().parents[2] / "benchmarks" / "sweep_hardened_celeba_cpu.yaml")
    assert {s.method for s in sweep.runs} == {"encoder", "hardened"}
    assert sweep.attack["attr_epochs"] >= 20 and 8 in sweep.attack["repeat"]  # early stopping decides below the caps
    for spec in sweep.runs:
        cfg = configure(sweep.config(spec))
        if spec.method == "hardened":
            assert cfg.model.bottleneck_channels != 0 and cfg.model.bottleneck_pool == 2
    by_name = {s.name: configure(sweep.config(s)) for s in sweep.runs}
    assert by_name["h-k1-s125-dcor1"].model.bottleneck_sigma == 1.25
    assert by_name["h-k1-s1-dcor1"].train.epochs_pretrain == 8 and by_name["h-k1-s1-dcor1"].params["warm_epochs"] == 4
    assert by_name["h-k1-s1-dcor1-ens"].train.epochs_adversarial > 0 == by_name["h-k1-s1-dcor1"].train.epochs_adversarial
    assert hardened.params(by_name["h-k1-s1-dcor1-img1"])["mu_image"] == 1.0
    spread = hardened.params(by_name["h-k1-s1-dcor1-img1-spread1"])
    preset_p = hardened.params(preset("celeba-cpu-hardened"))
    assert {k: spread[k] for k in preset_p} == preset_p  # the sweep's spread run is the preset's method setting


def test_init_from_loads_a_finished_runs_obfuscator_into_the_front(tmp_path, trained_run) -> None:
    cfg = preset("tiny")
    cfg.data.root = yaml.safe_load((trained_run / "config.yaml").read_text())["data"]["root"]
    assert cfg.data.root
    cfg.method = "hardened"
    cfg.params = {"init_from": str(trained_run), "adversaries": []}
    trainer = method_trainer(cfg, tmp_path / "h", progress=False)
    source = load_file(str(trained_run / "checkpoints" / "final.safetensors"))
    front = trainer.modules.obfuscator.front.state_dict()
    assert all(torch.equal(front[k], source[f"obfuscator.{k}"]) for k in front)
    cfg.params = {"init_from": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match="init_from"):
        method_trainer(cfg, tmp_path / "h2", progress=False)


def test_warm_epochs_train_the_front_with_the_auxiliary_head_only(tmp_path, tiny_cfg) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"adversaries": [], "warm_epochs": 1, "aux_epochs": 0}
    tiny_cfg.train.epochs_pretrain = 3  # epoch 1 is not the last: its validation has no audit
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    batch = next(iter(trainer.data.loader("train", 16).epoch(0)))
    before = {k: v.clone() for k, v in [*trainer.modules.classifier.state_dict().items(),
                                        *trainer.modules.obfuscator.bottleneck.state_dict().items()]}
    front = [p.clone() for p in trainer.modules.obfuscator.front.parameters()]
    out = trainer.step_pretrain(batch, 0)
    assert set(out) == {"L_aux"}
    after = {**trainer.modules.classifier.state_dict(), **trainer.modules.obfuscator.bottleneck.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith("num_batches_tracked"))
    assert any(not torch.equal(a, b) for a, b in zip(front, trainer.modules.obfuscator.front.parameters()))
    record = trainer.validate(0)  # a warm epoch reports what it trains: the auxiliary head on O's front
    assert set(record["warm_acc"]) == set(record["C_acc"]) and all(0 <= v <= 1 for v in record["warm_acc"].values())
    assert "warm-up head" in format_metrics({"stage": "pretrain", "epoch": 1, "seconds": 1.0, **record})
    trainer.position.epoch = 1  # after the warm epochs: the bottleneck path trains
    assert "L_C" in trainer.step_pretrain(batch, 0)
    assert "warm_acc" not in trainer.validate(0)


def test_penalties_ramp_in_over_the_first_bottleneck_epochs(tmp_path, tiny_cfg) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"adversaries": [], "aux_epochs": 0, "warm_epochs": 1, "mu_image": 1.0, "image_ramp_epochs": 2,
                         "mu": 1.0, "mu_ramp_epochs": 4, "mu_spread": 1.0, "spread_ramp_epochs": 1}
    tiny_cfg.train.epochs_pretrain = 5
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    shares = []
    for epoch in range(5):
        trainer.position.epoch = epoch
        shares.append(tuple(trainer.ramp(k) for k in ("image_ramp_epochs", "mu_ramp_epochs", "spread_ramp_epochs")))
    # warm epoch, first bottleneck epoch, then linear to full, each over its own ramp
    assert shares == [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.5, 0.25, 1.0), (1.0, 0.5, 1.0), (1.0, 0.75, 1.0)]
    batch = next(iter(trainer.data.loader("train", 16).epoch(0)))
    trainer.position.epoch = 1
    assert not {"dep_img", "dep", "spread"} & set(trainer.step_pretrain(batch, 0))
    trainer.position.epoch = 3
    assert {"dep_img", "dep", "spread"} <= set(trainer.step_pretrain(batch, 0))
    trainer.position.stage, trainer.position.epoch = 2, 0  # the adversarial stage: full weight
    assert trainer.ramp("image_ramp_epochs") == trainer.ramp("mu_ramp_epochs") == 1.0


def test_noise_curriculum_lowers_only_the_training_steps_noise(tmp_path, tiny_cfg) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"adversaries": [], "aux_epochs": 0, "warm_epochs": 0, "mu": 0.0, "sigma_ramp_epochs": 2}
    tiny_cfg.train.epochs_pretrain = 3
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    bn = trainer.bottleneck
    seen: list[float] = []
    add_noise = bn.add_noise
    bn.add_noise = lambda mean: (seen.append(bn.noise_scale), add_noise(mean))[1]  # record the scale in use
    batch = next(iter(trainer.data.loader("train", 16).epoch(0)))
    for epoch in range(3):
        trainer.position.epoch = epoch
        trainer.step_pretrain(batch, 0)
        assert bn.noise_scale == 1.0  # restored after every step: validation and deployment see the full noise
    assert seen == [0.0, 0.5, 1.0]
    bn.eval()
    with torch.no_grad():
        x = trainer.modules.obfuscator.eval().front(torch.rand(64, 3, *tiny_cfg.data.image_size))
    assert (bn(x) - bn.mean(x)).std().item() == pytest.approx(bn.sigma.item(), rel=0.1)
    bn.noise_scale = 0.5
    assert (bn(x) - bn.mean(x)).std().item() == pytest.approx(0.5 * bn.sigma.item(), rel=0.1)


def test_train_command_keeps_the_presets_method_unless_told_otherwise() -> None:
    """`deepobf train --preset celeba-cpu-hardened` trains `hardened` (it used to be overwritten by the paper's
    method); `--set method=` and `deepobf baseline NAME` still choose."""
    from deepobfuscator.cli import build_parser
    from deepobfuscator.options import build_config

    parse = build_parser().parse_args
    assert build_config(parse(["train", "--preset", "celeba-cpu-hardened"])).method == "hardened"
    assert build_config(parse(["train", "--preset", "celeba-cpu"])).method == "hardened"  # the default method
    assert build_config(parse(["train", "--preset", "celeba-cpu", "--paper"]), method="deepobfuscator").method \
        == "deepobfuscator"
    told = parse(["train", "--preset", "celeba-cpu-hardened", "--set", "method=deepobfuscator"])
    assert build_config(told).method == "deepobfuscator"
    assert build_config(parse(["baseline", "encoder", "--preset", "celeba-cpu-hardened"]), method="encoder").method \
        == "encoder"


def test_hardened_is_the_default_and_the_paper_one_flag_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`deepobf train` trains `hardened` unless --paper (or --set method=...) says otherwise."""
    from deepobfuscator import cli

    seen: list[str] = []
    monkeypatch.setattr(cli, "train_run", lambda cfg, out, **kw: seen.append(cfg.method) or {})
    assert cli.main(["train", "--preset", "celeba-cpu", "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["train", "--preset", "celeba-cpu", "--paper", "--out", str(tmp_path / "b")]) == 0
    assert cli.main(["train", "--preset", "celeba-cpu", "--set", "method=encoder", "--out", str(tmp_path / "c")]) == 0
    assert seen == ["hardened", "deepobfuscator", "encoder"]
    assert RunConfig().method == "hardened" and preset("tiny").method == "deepobfuscator"


def test_default_recipe_on_a_paper_schedule_is_the_measured_preset() -> None:
    """Without adversaries the paper schedule's adversarial epochs (and attacker epochs beyond one) go to stage 1:
    celeba-cpu's 4/2/6 becomes the preset's 11/1/0 with 4 warm epochs, the same recipe; a schedule without
    adversarial epochs is kept; `warm_epochs: -1` resolves into config.yaml (with the code head, when the run is
    created and its attributes are known)."""
    default = configure(preset("celeba-cpu"), "hardened")
    measured = configure(preset("celeba-cpu-hardened"))
    assert (default.model.bottleneck_code_head, default.params["warm_epochs"]) == ("auto", -1)  # not known yet
    for cfg in (default, measured):
        hardened.resolve_code_head(cfg, [AttributeSpec("Smiling", 2)])
    assert default.model.bottleneck_code_head == "mlp"
    t = default.train
    assert (t.epochs_pretrain, t.epochs_attacker, t.epochs_adversarial) == (11, 1, 0)
    assert default.params == measured.params and default.model == measured.model
    assert default.params["warm_epochs"] == 4
    again = configure(default)  # idempotent (configure runs again when a run is resumed or attacked)
    assert (again.train.epochs_pretrain, again.params["warm_epochs"]) == (11, 4)
    kept = preset("celeba-cpu")
    kept.train.epochs_adversarial = 0
    assert configure(kept, "hardened").train.epochs_pretrain == 4
    ens = preset("celeba-cpu")
    ens.params = {"adversaries": ["vgg"]}
    assert configure(ens, "hardened").train.epochs_adversarial == 6  # with adversaries the schedule stays
    assert [hardened.auto_warm_epochs(n) for n in (1, 2, 4, 11, 22)] == [0, 1, 1, 4, 8]
    # a code head seeded from the warm head: the bottleneck keeps its longest ramp and 2 epochs at full weight
    assert [hardened.auto_warm_epochs(n, 3, seeded=True) for n in (1, 2, 4, 6, 11, 14, 22)] == [0, 1, 1, 2, 6, 9, 17]
    assert [hardened.auto_warm_epochs(n, 0, seeded=True) for n in (2, 3, 11)] == [1, 1, 9]
    seeded = preset("celeba-cpu")
    seeded.model.bottleneck_code_head = "vgg"
    assert configure(seeded, "hardened").params["warm_epochs"] == 6
    seeded.model.bottleneck_code_head, seeded.params = "vgg", {"sigma_ramp_epochs": 5}  # the longest ramp decides
    assert configure(seeded, "hardened").params["warm_epochs"] == 4
    critic = preset("celeba-cpu")
    critic.model.bottleneck_code_head = "vgg"
    critic.params = {"mu_critic": 1.0, "critic_ramp_epochs": 6}  # the critic's ramp counts when the critic is on
    assert configure(critic, "hardened").params["warm_epochs"] == 4
    critic.params = {"critic_ramp_epochs": 6}
    assert configure(critic, "hardened").params["warm_epochs"] == 6
    bad = preset("celeba-cpu")
    bad.params = {"warm_epochs": -2}
    with pytest.raises(ConfigError, match="warm_epochs"):
        configure(bad, "hardened")


def test_the_bottleneck_width_rule_is_deterministic_and_recorded(tiny_cfg, tmp_path: Path) -> None:
    from deepobfuscator.models.bottleneck import auto_channels

    assert auto_channels([2]) == 1 and auto_channels([2, 2]) == 2 and auto_channels([10]) == 9
    assert auto_channels([10, 2]) == 10 and auto_channels([3]) == 2 and auto_channels([]) == 1
    cfg = configure(tiny_cfg, "hardened")
    cfg.data.task = ["Smiling", "High_Cheekbones"]
    cfg.params = {**cfg.params, "audit": False}
    cfg.train.epochs_pretrain, cfg.train.epochs_attacker = 2, 0
    out = tmp_path / "two"
    train_run(cfg, out, progress=False)
    recorded = RunDir(out).read_config()
    assert recorded.model.bottleneck_channels == 2  # two binary intended attributes
    assert recorded.meta["bottleneck_rule"]["classes"] == [2, 2] and recorded.meta["feature_shape"][0] == 2
    assert recorded.model.bottleneck_code == 16  # recorded: the code is part of what ran
    # a run written before the code head (no bottleneck_code in config.yaml) loads with its 8x8 map
    raw = yaml.safe_load((out / "config.yaml").read_text())
    del raw["model"]["bottleneck_code"]
    (out / "config.yaml").write_text(yaml.safe_dump(raw))
    assert run_obfuscator(RunDir(out).read_config()).bottleneck.code == 0


def test_row_bank_appends_detached_earlier_rows_newest_first() -> None:
    from deepobfuscator.dependence import RowBank

    x = torch.randn(3, 4)
    assert RowBank(0).extend(x)[0] is x  # no bank: the batch alone
    bank = RowBank(5)
    first = torch.arange(3.0).reshape(3, 1)
    assert torch.equal(bank.extend(first, first.long())[0], first)
    second = torch.full((3, 1), 9.0, requires_grad=True)
    feats, labels = bank.extend(second, second.detach().long())
    assert feats.shape == (6, 1) and labels.shape == (6, 1) and len(bank) == 5
    feats.sum().backward()
    assert torch.equal(second.grad, torch.ones(3, 1))  # gradients reach the current rows; bank rows are constants
    assert not bank.rows[0].requires_grad and bank.rows[0][:, 0].tolist() == [9, 9, 9, 0, 1]  # the oldest row left
    with pytest.raises(ValueError, match="shapes changed"):
        bank.extend(torch.zeros(2, 2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=">= 0"):
        RowBank(-1)


def test_conditional_critic_finds_what_the_mean_says_beyond_the_intended_label() -> None:
    from deepobfuscator.data import AttributeSpec
    from deepobfuscator.training.critic import ConditionalCritic

    torch.manual_seed(0)
    task_specs, private_specs = [AttributeSpec("Smiling")], [AttributeSpec("Male")]
    n = 256
    task = torch.randint(0, 2, (n, 1))
    private = ((task[:, 0] + torch.randint(0, 3, (n,))) >= 2).long().unsqueeze(1)  # depends on the task label
    clean = task.float().view(n, 1, 1, 1).expand(n, 1, 4, 4) + 0.1 * torch.randn(n, 1, 4, 4)  # the label alone
    leaky = clean + private.float().view(n, 1, 1, 1) * torch.linspace(-1, 1, 16).view(1, 1, 4, 4)  # + a pattern
    kls = {}
    for name, mean in (("clean", clean), ("leaky", leaky)):
        critic = ConditionalCritic("mlp", (1, 4, 4), task_specs, private_specs, width=0.25, fc_width=None)
        for _ in range(150):
            critic.step(mean, task, private)
        prior = critic.prior(torch.tensor([[0], [1]]))[0][:, 1]
        for value in (0, 1):  # the counted prior is p(Male | Smiling), add-one smoothed
            rate = private[task[:, 0] == value].float().mean().item()
            assert prior[value].item() == pytest.approx(rate, abs=0.02)
        grad_mean = mean.clone().requires_grad_(True)
        loss, kls[name] = critic.obfuscator_loss(grad_mean, task)
        loss.backward()
        assert grad_mean.grad is not None and torch.isfinite(grad_mean.grad).all()
    assert kls["leaky"] > 1.0 and kls["clean"] < 0.15  # nats beyond the prior: only the leaky mean gives many


def test_label_matrix_takes_a_class_count_per_column() -> None:
    labels = torch.tensor([[0, 2], [1, 0]])
    assert label_matrix(labels, [2, 4]).tolist() == [[1, 0, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0]]
    assert label_matrix(labels).shape == (2, 5)  # counts from the batch: 2 and 3
    with pytest.raises(ValueError):
        label_matrix(labels, [2])


def test_c_can_be_a_linear_map_of_the_averaged_code(tiny_cfg, tmp_path) -> None:
    from deepobfuscator.deploy.export import export_run
    from deepobfuscator.models.heads import LinearProbe
    from deepobfuscator.registry import UnknownNameError
    tiny_cfg.method = "hardened"
    tiny_cfg.model.bottleneck_code_head, tiny_cfg.model.classifier = "vgg", "linear"
    tiny_cfg.params = {"warm_epochs": 1, "audit": False}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 2, 0
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    assert isinstance(trainer.modules.classifier, LinearProbe)
    trainer.fit()
    assert "classifier: linear" in (tmp_path / "h" / "config.yaml").read_text()
    first = [r for r in trainer.run.read_metrics() if r["stage"] == "pretrain"][0]
    assert first["code_seeded"] is True and first["decoder_seeded"] is True  # C starts as the code's decoder
    rate = tiny_cfg.train.lr * hardened.DEFAULTS["seeded_lr_scale"]  # the bottleneck epochs fine-tune the copy
    assert first["lr"] == pytest.approx(rate) and rate < tiny_cfg.train.lr
    assert all(g["lr"] == pytest.approx(rate) for n in ("obfuscator", "classifier")
               for g in trainer.optimizers[n].param_groups)
    assert (tmp_path / "h" / "checkpoints" / "final.safetensors").is_file()
    card = export_run(tmp_path / "h")
    assert "classifier" in card["parity"]  # the cloud part exports (and passes parity) like the paper's C
    tiny_cfg.model.classifier, tiny_cfg.model.bottleneck_prediction = "nope", None  # as a fresh config has it
    with pytest.raises(UnknownNameError, match="unknown classifier 'nope'.*linear"):
        method_trainer(tiny_cfg, tmp_path / "bad", progress=False)


def test_the_phone_sends_cs_prediction_behind_a_whole_head_and_exports(tiny_cfg, tmp_path) -> None:
    """The rule: behind a code head of C's architecture read by a linear C, the deployed phone sends the centroid of the
    class C predicts (plus noise), calibrated at every validation; C decodes it to C's own noise-free prediction, the
    run records the rule and its deployed parts export with parity."""
    from deepobfuscator.deploy.export import export_run
    tiny_cfg.method = "hardened"
    tiny_cfg.model.bottleneck_code_head, tiny_cfg.model.classifier = "vgg", "linear"
    tiny_cfg.params = {"warm_epochs": 1, "audit": False}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 2, 0
    trainer = method_trainer(tiny_cfg, tmp_path / "q", progress=False)
    trainer.fit()
    assert tiny_cfg.model.bottleneck_prediction == [2]
    assert tiny_cfg.meta["prediction_rule"]["prediction"] == [2]
    records = [r for r in trainer.run.read_metrics() if r["stage"] == "pretrain"]
    assert records[0]["code_seeded"] is True and records[-1]["prediction"]["codes"] > 0
    obf, clf = trainer.modules.obfuscator.eval(), trainer.modules.classifier.eval()
    final = load_file(str(trainer.run.final))  # the deployed weights carry the calibration their validation set
    assert torch.equal(final["obfuscator.bottleneck.centroids"], obf.bottleneck.centroids)
    batch = next(iter(trainer.data.loader("test", 32).epoch(0)))
    images = trainer.prepare_images(batch.images)
    with torch.no_grad():
        code = obf.bottleneck.normalised_code(obf.front(images))
        sent = obf.mean(images)
        own = clf.linear(code).flatten() > 0  # C's noise-free prediction on the code itself
        decoded = clf(sent).flatten() > 0
    assert len(set(sent[:, 0].flatten().tolist())) <= 2  # one value per predicted class, repeated over the map
    assert torch.equal(own, decoded)
    assert "bottleneck_prediction:\n  - 2" in (tmp_path / "q" / "config.yaml").read_text()
    card = export_run(tmp_path / "q")
    assert "obfuscator" in card["parity"] and "classifier" in card["parity"]
    assert "centroid of the class combination C predicts" in card["features"]["content"]


def test_the_prediction_rule_keeps_the_code_behind_the_small_head_and_checks_a_set_one(tiny_cfg) -> None:
    from deepobfuscator.methods.hardened import auto_prediction, resolve_prediction
    assert auto_prediction([10], 16, "vgg", "linear") == [10]
    assert auto_prediction([2, 2], 16, "mlp", "vgg") == [] and auto_prediction([10], 16, "vgg", "vgg") == []
    specs = [AttributeSpec("behaviour", 10)]
    tiny_cfg.model.bottleneck_code, tiny_cfg.model.bottleneck_code_head, tiny_cfg.model.classifier = 16, "vgg", "linear"
    tiny_cfg.model.bottleneck_prediction = [3]
    with pytest.raises(ConfigError, match=r"bottleneck_prediction \[3\] must list .* \[10\]"):
        resolve_prediction(tiny_cfg, specs)
    tiny_cfg.model.bottleneck_prediction, tiny_cfg.model.classifier = [10], "vgg"
    with pytest.raises(ConfigError, match="needs a linear C"):
        resolve_prediction(tiny_cfg, specs)
    tiny_cfg.model.bottleneck_prediction = []  # explicitly off: kept, nothing recorded
    resolve_prediction(tiny_cfg, specs)
    assert tiny_cfg.model.bottleneck_prediction == [] and "prediction_rule" not in tiny_cfg.meta


def test_the_step_decay_divides_the_fine_tuning_rate_not_the_runs(tiny_cfg, tmp_path) -> None:
    """``train.lr_drop_epochs`` with a seeded head: the bottleneck epochs run at the fine-tuning rate and the last
    one at the decay factor times it (the decay once reset the rate to the run's, undoing the fine-tuning)."""
    tiny_cfg.method = "hardened"
    tiny_cfg.model.bottleneck_code_head, tiny_cfg.model.classifier = "vgg", "linear"
    tiny_cfg.params = {"warm_epochs": 1, "audit": False}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 3, 0
    tiny_cfg.train.lr_drop_epochs, tiny_cfg.train.lr_drop_factor = 1, 0.5
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    seen = []
    set_rate = trainer.set_rate
    trainer.set_rate = lambda rate: (seen.append((trainer.position.epoch, rate)), set_rate(rate))[1]
    trainer.fit()
    fine = tiny_cfg.train.lr * hardened.DEFAULTS["seeded_lr_scale"]
    by_epoch = dict(seen)  # the last rate set at each stage-1 epoch
    assert by_epoch[0] == pytest.approx(fine)  # set at the seeding, after the warm epoch's validation
    assert by_epoch[1] == pytest.approx(fine) and by_epoch[2] == pytest.approx(fine * 0.5)
    assert seen[0] == (0, pytest.approx(tiny_cfg.train.lr))  # the warm epoch


def test_the_code_head_rule_picks_c_architecture_for_multi_class_intended_labels_only() -> None:
    from deepobfuscator.models.bottleneck import auto_code_head, build_run_obfuscator
    assert [auto_code_head(c) for c in ([2], [2, 2], [10], [2, 10], [3])] == ["mlp", "mlp", "vgg", "vgg", "vgg"]
    assert auto_code_head([10], code=0) == "mlp" and auto_code_head([10], code=16, code_depth=3) == "mlp"
    sf = configure(preset("statefarm-cpu"), "hardened")
    assert (sf.train.epochs_pretrain, sf.model.bottleneck_code_head, sf.params["warm_epochs"]) == (14, "auto", -1)
    hardened.resolve_code_head(sf, [AttributeSpec("behaviour", 10)])
    assert (sf.model.bottleneck_code_head, sf.params["warm_epochs"]) == ("vgg", 9)  # the seeded head's warm rule
    assert sf.model.classifier == "linear"  # C starts as the seeded code's decoder
    assert sf.params["audit_from"] == "full_weight"  # its few bottleneck epochs are chosen among by the audit
    assert sf.meta["code_head_rule"]["classes"] == [10] and sf.meta["code_head_rule"]["code_head"] == "vgg"
    again = configure(sf)  # idempotent once resolved
    assert (again.model.bottleneck_code_head, again.params["warm_epochs"]) == ("vgg", 9)
    mine = preset("statefarm-cpu")
    mine.model.bottleneck_code_head = "mlp"  # a user's choice is kept
    configure(mine, "hardened")
    hardened.resolve_code_head(mine, [AttributeSpec("behaviour", 10)])
    assert (mine.model.bottleneck_code_head, mine.params["warm_epochs"], "code_head_rule" in mine.meta) == \
        ("mlp", 5, False)
    assert mine.model.classifier == "vgg" and mine.params["audit_from"] == "last"  # the paper's C behind the MLP head
    paper_c = preset("statefarm-cpu")
    paper_c.model.classifier = "vgg"  # a user's C is kept behind the rule's head
    hardened.resolve_code_head(configure(paper_c, "hardened"), [AttributeSpec("behaviour", 10)])
    assert (paper_c.model.bottleneck_code_head, paper_c.model.classifier) == ("vgg", "vgg")
    assert configure(preset("statefarm-cpu"), "encoder").model.classifier == "vgg"  # other methods: the paper's C
    bad = preset("statefarm-cpu")
    bad.params = {"warm_epochs": 14}  # wrong whatever the head: caught before the run is created
    with pytest.raises(ConfigError, match="warm_epochs"):
        configure(bad, "hardened")
    with pytest.raises(ValueError, match="when the run is created"):
        build_run_obfuscator(0.0625, True, 1, code=16, image_size=(32, 32), code_head="auto")


def test_resolved_config_applies_a_run_s_creation_rules_without_a_run_directory() -> None:
    """What benchmarks build modules from: the same choices a created run records in its config.yaml."""
    behaviour, driver = AttributeSpec("behaviour", 10), AttributeSpec("driver", 26)
    sf = resolved_config(preset("statefarm-cpu"), [behaviour])
    assert (sf.model.bottleneck_channels, sf.model.bottleneck_code_head, sf.model.bottleneck_prediction) == \
        (9, "vgg", [10])
    assert {"bottleneck_rule", "code_head_rule", "prediction_rule"} <= set(sf.meta)
    modules = build_modules(sf, [behaviour], [driver], seed=0)
    assert modules.classifier(modules.obfuscator(torch.rand(2, 3, 48, 64))).shape == (2, 10)
    faces = resolved_config(preset("celeba-cpu"), [AttributeSpec("Smiling"), AttributeSpec("High_Cheekbones")])
    assert (faces.model.bottleneck_channels, faces.model.bottleneck_code_head, faces.model.bottleneck_prediction) == \
        (2, "mlp", [])


def test_a_default_run_records_the_code_head_its_rule_chose_and_old_configs_build_the_mlp_head(tiny_cfg,
                                                                                              tmp_path) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"audit": False}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 2, 0
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    recorded = yaml.safe_load(trainer.run.config.read_text())
    assert recorded["model"]["bottleneck_code_head"] == "mlp" and recorded["method"]["warm_epochs"] == 1
    assert recorded["meta"]["code_head_rule"]["classes"] == [2] * len(tiny_cfg.data.task)
    assert trainer.cfg.model.bottleneck_code_head == "mlp"
    del recorded["model"]["bottleneck_code_head"]  # a run written before the setting
    old = RunConfig.from_dict(recorded)
    assert old.model.bottleneck_code_head is None
    assert not run_obfuscator(old).bottleneck.whole_head and not trainer.modules.obfuscator.bottleneck.whole_head
    assert run_obfuscator(old).state_dict().keys() == trainer.modules.obfuscator.state_dict().keys()


def test_a_sweep_compares_the_code_head_and_warm_epochs_as_the_run_resolved_them() -> None:
    from deepobfuscator.experiments.sweep import _comparable
    requested = configure(preset("celeba-cpu"), "hardened")
    recorded = configure(preset("celeba-cpu"), "hardened")
    hardened.resolve_code_head(recorded, [AttributeSpec("Smiling", 2)])
    recorded.model.bottleneck_channels = 1  # the width rule, also resolved at creation
    assert _comparable(recorded) == _comparable(requested, recorded)  # the finished run is the one asked for
    requested.params = {**requested.params, "mu": 2.0}
    assert _comparable(recorded) != _comparable(requested, recorded)


@pytest.mark.parametrize("audit_from, audited", [("last", [5]), ("full_weight", [4, 5]), ("ramps", [3, 4, 5])])
def test_the_audit_scores_the_stage_1_epochs_audit_from_names_and_deploys_its_choice(tiny_cfg, tmp_path, audit_from,
                                                                                      audited) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"warm_epochs": 1, "sigma_ramp_epochs": 2, "image_ramp_epochs": 2, "spread_ramp_epochs": 2,
                       "audit_from": audit_from, "audit_images": 32, "audit_val_images": 16, "audit_epochs": 1}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 5, 0
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    trainer.fit()
    records = trainer.run.read_metrics()
    assert [r["epoch"] for r in records if "audit" in r] == audited
    selection = json.loads((trainer.run.path / "audit_selection.json").read_text())
    assert selection["reference_utility"] == max(c["utility"] for c in selection["candidates"])
    chosen = trainer.candidate_file(selection["selected"])
    assert sorted(trainer.run.checkpoints.glob("audit-*.safetensors")) == [chosen]  # the others are removed
    final, best = load_file(str(trainer.run.final)), load_file(str(chosen))
    assert all(torch.equal(final[k], best[k]) for k in best)


def test_a_more_useful_later_epoch_can_make_an_earlier_one_the_choice_and_its_weights_are_kept(tiny_cfg,
                                                                                             tmp_path) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.params = {"audit": False}
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    for epoch, utility, leakage in ((1, 0.80, 0.5), (2, 0.79, 0.4), (3, 0.805, 0.6)):
        trainer.record_candidate({"stage": "pretrain", "epoch": epoch, "utility": utility, "leakage": leakage})
    selection = json.loads((trainer.run.path / "audit_selection.json").read_text())
    # epoch 2 was the choice after epoch 2; epoch 3 raised the reference to 0.805, which leaves epoch 2 out
    assert selection["selected"]["epoch"] == 1 and selection["reference_utility"] == 0.805
    assert trainer.chosen_weights() == trainer.candidate_file(selection["selected"])
    assert [p.name for p in trainer.run.checkpoints.glob("audit-*")] == ["audit-pretrain-1.safetensors"]


def test_a_linear_c_seeded_as_the_codes_decoder_predicts_what_the_warm_head_predicted() -> None:
    from deepobfuscator.losses import predictions
    from deepobfuscator.methods.hardened import seed_code_decoder, seed_code_head
    from deepobfuscator.models.heads import LinearProbe
    from deepobfuscator.models.vgg import VGGClassifier
    torch.manual_seed(0)
    specs = [AttributeSpec("Smiling", 2), AttributeSpec("behaviour", 4)]  # 1 + 4 logits; the code: 1 + 3 values
    warm = VGGClassifier(8, (8, 8), 5, 0.0625, fc_width=16).eval()
    head = VGGClassifier(8, (8, 8), 4, 0.0625, fc_width=16).eval()
    assert seed_code_head(head, warm, specs)
    feats = torch.randn(64, 8, 8, 8)
    code = head(feats).double()
    norm, c = torch.nn.BatchNorm1d(4, affine=False), LinearProbe(4, 5)
    assert seed_code_decoder(c, norm, code.mean(0), code.var(0), specs)
    norm.eval()
    sent = norm(code.float())[:, :, None, None] * torch.ones(1, 1, 3, 3)  # the code repeated over the sent map
    assert torch.equal(predictions(c(sent), specs), predictions(warm(feats), specs))
    logits = c(sent)
    assert torch.allclose(logits[:, 0], warm(feats)[:, 0], atol=1e-4) and torch.all(logits[:, 4] == 0)
    assert not seed_code_decoder(VGGClassifier(4, (8, 8), 5, 0.0625, fc_width=16), norm, code.mean(0), code.var(0),
                                 specs)  # only a linear C decodes exactly
    assert not seed_code_decoder(LinearProbe(3, 5), norm, code.mean(0)[:3], code.var(0)[:3], specs)  # wrong width



def test_a_seeded_code_head_starts_from_the_warm_epoch_with_the_best_validation(tiny_cfg, tmp_path, monkeypatch) -> None:
    tiny_cfg.method = "hardened"
    tiny_cfg.model.bottleneck_code_head = "vgg"
    tiny_cfg.params = {"warm_epochs": 3, "audit": False}
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 4, 0
    trainer = method_trainer(tiny_cfg, tmp_path / "h", progress=False)
    scores = iter([0.5, 0.9, 0.6])  # the warm head's validation per warm epoch: the second is the best
    monkeypatch.setattr(trainer, "warm_accuracy", lambda split="val": {"Smiling": next(scores)})
    kept = {}
    original = trainer.keep_best_warm

    def keep(accuracy):
        original(accuracy)
        if trainer.position.epoch == 1:  # remember the best epoch's front to compare after the restore
            kept.update({k: v.clone() for k, v in trainer.modules.obfuscator.front.state_dict().items()})
    monkeypatch.setattr(trainer, "keep_best_warm", keep)
    seen = {}
    real_seed = hardened.seed_code_head

    def seed(head, classifier, specs):
        seen.update({k: v.clone() for k, v in trainer.modules.obfuscator.front.state_dict().items()})
        return real_seed(head, classifier, specs)
    monkeypatch.setattr(hardened, "seed_code_head", seed)
    trainer.fit()
    warm = [r for r in trainer.run.read_metrics() if r["stage"] == "pretrain"][2]
    assert warm["warm_restored"] == 2 and warm["code_seeded"] is True
    assert kept and all(torch.equal(seen[k], v) for k, v in kept.items())  # the head started from epoch 2's front
