"""**Hardened**: a defence meant to hold against attackers trained afresh on the frozen obfuscator.

Four mechanisms, each a config knob (method parameters: :class:`HardenedParams`, under ``method:``; the bottleneck in
``model.bottleneck_*``; all recorded in ``config.yaml``):

1. A noisy information bottleneck on what the phone sends (``models/bottleneck.py``): 1x1 conv to ``k``
   channels, pooling, scale-fixing normalisation, Gaussian noise drawn afresh on every call (training and
   deployment), optionally a learned per-channel std with a VIB KL term of weight ``beta``.
2. An ensemble of attribute adversaries (``adversaries``, e.g. vgg/resnet/mlp) with ``attacker_steps``
   updates per obfuscator step and one member re-initialised every ``restart_every`` steps; O plays the
   bounded entropy objective against the strongest member (or their mean). The paper's reconstruction term
   ``lambda2 * (L(AR2) - L(AR1))`` against the run's AR stays (``privacy.defend``).
3. Adversary-free penalties on the sent features' *mean* (so averaging repeated queries gains nothing they
   did not already carry): distance correlation (or HSIC) with the private labels *within each
   intended-label class*, weight ``mu``; and with the image itself (average-pooled by ``image_pool``),
   again within each intended-label class, weight ``mu_image``: whatever the features say about the face
   beyond the intended label is penalised, which is what reconstruction and re-identification feed on.
   Both act in every stage that trains O; each can ramp in (``mu_ramp_epochs``, ``image_ramp_epochs``: a cold
   bottleneck must first learn the intended label, or the term flattens it before it carries anything).
   ``sigma_ramp_epochs`` is the same curriculum for the training noise: a cold 1-channel bottleneck under the full
   noise sometimes never finds the intended label (Smiling 0.52-0.58 for 6 epochs in one of seven runs).
4. The deployed checkpoint is chosen by an audit (fresh linear + small CNN attackers, fixed budget) at the
   end of stage 1 and of every adversarial epoch: lowest audit leakage among epochs whose validation utility
   stays within ``max_utility_drop`` of stage 1's; ``audit_selection.json`` records which epoch won.

Stage 1 trains O (with the bottleneck) and C on L(C) + mu * dependence + beta * KL, during its first
``aux_epochs`` epochs also an auxiliary Encoder-style head on O's un-bottlenecked output (deep supervision,
never deployed: a cold 1-channel noisy bottleneck alone barely leaves chance in 4 epochs); stage 2 trains the run's
diagnostic AR/AC and the ensemble on the frozen O; stage 3 alternates one O+C step against the ensemble with
``attacker_steps`` ensemble/AR updates. Without adversaries there is no stage 3.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, RunConfig
from ..data import AttributeSpec, Batch
from ..dependence import MEASURES, RowBank, conditional_dependence, within_class_dependence, within_class_spread
from ..losses import attribute_loss, predictions, reconstruction_losses
from ..models import build_classifier
from ..models.heads import LinearProbe
from ..models.bottleneck import (AUTO_CHANNELS, AUTO_HEAD, auto_code_head, bottleneck_of, code_width,
                                 whole_code_head)
from ..models.vgg import Obfuscator
from ..training.adversaries import OBJECTIVES, TARGETS, AdversaryEnsemble, build_adversary
from ..training.critic import ConditionalCritic
from ..training.audit import AuditSettings, audit_leakage, select_epoch
from ..training.checkpoint import load_modules, save_modules
from ..runs import RunDir
from ..training.modules import feature_shape
from ..training.trainer import Trainer
from ..utils import atomic_write_json
from .params import MethodParams, param, search, validate_params
from .registry import Method, no_adversarial, register_method

SELECTION_FILE = "audit_selection.json"
AUDIT_FROM = ("auto", "last", "full_weight", "ramps")  # hardened's audit_from: which stage-1 epochs are candidates
WARM_BEST = "warm_best"  # under checkpoints/: the warm stage's best validation epoch (.safetensors, .json)
DEPLOYED = ("obfuscator", "classifier")  # what the audit's choice replaces in the final weights
AUDIT_BEST = "audit_best.safetensors"  # under checkpoints/: the choice so far (runs written before per-candidate files)

class HardenedParams(MethodParams):
    """The hardened defence's parameters; the defaults are the measured recipe (docs/hardened.md,
    benchmarks/results/hardened_celeba_cpu.md): bottleneck + the three within-class terms, ramped in, no adversarial
    stage."""

    mu: float = param(1.0, "within-class dependence penalty weight (private labels)", ge=0,
                      tune=search(0.25, 4.0, log=True))
    dependence: Literal[tuple(MEASURES)] = param(  # type: ignore[valid-type]
        "dcor", "dependence measure of the penalties")
    dependence_bank: int = param(0, "rows of earlier batches (detached) that the private-label term's estimate uses "
                                 "beside the batch (0: the batch alone)", ge=0)
    mu_image: float = param(1.0, "within-class dependence penalty weight against the (downsampled) image itself",
                            ge=0, tune=search(0.25, 4.0, log=True))
    image_pool: int = param(4, "the image term's average-pooling factor (64x64 -> 16x16)", ge=1)
    image_ramp_epochs: int = param(3, "the image term's weight grows linearly over the first N bottleneck epochs",
                                   ge=0)
    mu_spread: float = param(1.0, "weight of the within-class share of the sent mean's variance (collapse onto "
                             "class means)", ge=0, tune=search(0.25, 4.0, log=True))
    spread_ramp_epochs: int = param(3, "the spread term's ramp, as above", ge=0)
    mu_ramp_epochs: int = param(0, "the private-label term's ramp, as above", ge=0)
    mu_critic: float = param(0.0, "weight of the conditional critic of the noise-free mean (an attacker that also "
                             "reads the intended labels; O pulls its prediction to p(private | intended))", ge=0)
    critic: str = param("resnet", "the critic's architecture (vgg, resnet, mlp, linear)")
    critic_restart_every: int = param(300, "critic updates between re-initialisations (0: never)", ge=0)
    critic_steps: int = param(1, "critic updates per obfuscator step (on the batch's detached mean)", ge=1)
    critic_ramp_epochs: int = param(3, "the critic term's ramp, as above (the critic trains from the start)", ge=0)
    sigma_ramp_epochs: int = param(3, "stage-1 training noise grows from 0 to sigma over the first N bottleneck "
                                   "epochs", ge=0)
    beta: float = param(0.0, "VIB KL weight (meaningful with model.bottleneck_learn_sigma)", ge=0)
    warm_epochs: int = param(-1, "first stage-1 epochs that train only O's front with an Encoder-style head (no "
                             "bottleneck); -1: about 4/11 of stage 1, or, for a code head seeded from them "
                             "(bottleneck_code_head: vgg, the rule's head for a multi-class intended attribute), all "
                             "but the bottleneck's longest ramp and 2 epochs (resolved when the run is created)",
                             ge=-1)
    aux_epochs: int = param(0, "first stage-1 epochs (after the warm ones) that keep that head as deep supervision",
                            ge=0)
    aux_weight: float = param(1.0, "weight of the auxiliary head's loss", ge=0)
    seeded_lr_scale: float = param(0.1, "learning-rate factor of O and C once a code head is seeded from the warm "
                                   "head: the bottleneck epochs fine-tune what the warm epochs learnt", gt=0, le=1)
    init_from: str = param("", "a finished run (e.g. the Encoder's) whose obfuscator initialises O's front")
    adversaries: list[str] = param([], "e.g. [vgg, resnet, mlp]: the adversarial stage against a restarted "
                                   "ensemble ([]: none)")
    attacker_steps: int = param(1, "ensemble updates per obfuscator step", ge=1)
    restart_every: int = param(100, "ensemble steps between re-initialising one member (0: never)", ge=0)
    against: Literal[TARGETS] = param(  # type: ignore[valid-type]
        "max", "O plays against the strongest member on the batch, or their mean")
    objective: Literal[OBJECTIVES] = param(  # type: ignore[valid-type]
        "entropy", "O's attribute objective: bounded entropy or the paper's negative BCE")
    audit: bool = param(True, "choose the deployed checkpoint by an audit of fresh small attackers")
    audit_images: int = param(2000, "training images of the audit's attackers", ge=1)
    audit_val_images: int = param(800, "validation images of the audit", ge=1)
    audit_epochs: int = param(4, "epochs of the audit's attackers", ge=1)
    max_utility_drop: float = param(0.01, "the audit only picks epochs within this of stage 1's validation utility",
                                    ge=0)
    audit_from: Literal[AUDIT_FROM] = param(  # type: ignore[valid-type]
        "auto", "which stage-1 epochs the audit scores as candidates: the last only; every one at full noise and "
                "penalty weight (full_weight: from the end of the longest ramp); every bottleneck epoch but the first "
                "(ramps: the ramps' epochs too); auto: full_weight behind a code head seeded from the warm epochs, "
                "whose few bottleneck epochs swing in validation, else last. Stage 1's reference utility is its best "
                "candidate's")


DEFAULTS: dict[str, Any] = HardenedParams().model_dump()
# what DEFAULTS were before the measured recipe became the default (issue 13's earlier runs name them explicitly)
LEGACY_DEFAULTS: dict[str, Any] = {"mu_image": 0.0, "image_ramp_epochs": 0, "mu_spread": 0.0, "spread_ramp_epochs": 0,
                                   "sigma_ramp_epochs": 0, "warm_epochs": 0, "aux_epochs": 2,
                                   "adversaries": ["vgg", "resnet", "mlp"]}
MIN_SENT_HW = 8
AUTO_CLASSIFIER = "auto"  # model.classifier: chosen with the code head by auto_classifier
BOTTLENECK_DEFAULTS = {"bottleneck_channels": AUTO_CHANNELS, "bottleneck_pool": 2, "bottleneck_sigma": 1.0,
                       "bottleneck_code": 16, "bottleneck_code_head": AUTO_HEAD}


def params(cfg: RunConfig) -> dict[str, Any]:
    """Validated hardened parameters (``cfg.params`` over the defaults)."""
    return validate_params(HardenedParams, cfg.params, "hardened").model_dump()


PREDICTION_IMAGES = 4096  # training images whose codes set the centroids C's prediction is sent as

# epochs a seeded code head trains at the full noise and penalty weights once its ramps are done (warm_epochs: -1)
FULL_WEIGHT_EPOCHS = 2
RAMPS = ("sigma_ramp_epochs", "image_ramp_epochs", "spread_ramp_epochs", "mu_ramp_epochs")


def bottleneck_ramp(p: dict[str, Any]) -> int:
    """The longest ramp of the bottleneck epochs (the critic's counts only when the critic is on)."""
    return max([p[k] for k in RAMPS] + ([p["critic_ramp_epochs"]] if p["mu_critic"] > 0 else []))


def auto_warm_epochs(stage1_epochs: int, ramp_epochs: int = 3, seeded: bool = False) -> int:
    """``warm_epochs: -1``: about 4/11 of stage 1 (the measured 4 of 11), at least 1 when stage 1 has 2 epochs or more
    and always fewer than stage 1, so the bottleneck keeps epochs of its own. When the code head starts from the warm
    epochs' head (``seeded``: a code head of C's architecture), what the warm epochs learn is what the code starts
    from, so they take every stage-1 epoch but those the bottleneck needs, its longest ramp and then
    ``FULL_WEIGHT_EPOCHS`` at full weight (statefarm-cpu's 14 stage-1 epochs: 9 instead of 5, behaviour 0.54 -> 0.74
    and 0.83 on two splits, benchmarks/results/statefarm_cpu.md); a code head that starts at random (the MLP head)
    has C to learn in the bottleneck epochs and keeps the fraction (longer warm stages gave it nothing there)."""
    if stage1_epochs < 2:
        return 0
    fraction = max(1, round(stage1_epochs * 4 / 11))
    if not seeded:
        return fraction
    return min(stage1_epochs - 1, max(fraction, stage1_epochs - ramp_epochs - FULL_WEIGHT_EPOCHS))


def configure(cfg: RunConfig) -> None:
    """Fill the bottleneck settings left unset. No adversaries means no adversarial stage: the epochs a schedule gives
    it, and the attacker stage's beyond one (the run's diagnostic AR/AC), go to stage 1, so a schedule written for the
    paper's method (e.g. celeba-cpu's 4/2/6) trains `hardened` for as many epochs (11/1/0); a schedule that already
    has no adversarial epochs is kept. Resolves ``warm_epochs: -1`` into ``cfg.params`` so ``config.yaml`` records
    what ran; with the code head left to its rule (``auto``, the default) both are resolved when the run is created
    and its intended attributes are known (:meth:`HardenedTrainer.resolve_at_creation`)."""
    m = cfg.model
    if not m.bottleneck_channels:
        m.bottleneck_channels = BOTTLENECK_DEFAULTS["bottleneck_channels"]
    if m.bottleneck_sigma is None:
        m.bottleneck_sigma = BOTTLENECK_DEFAULTS["bottleneck_sigma"]
    if m.bottleneck_code is None:
        m.bottleneck_code = BOTTLENECK_DEFAULTS["bottleneck_code"]
    if m.bottleneck_code_head is None:
        m.bottleneck_code_head = BOTTLENECK_DEFAULTS["bottleneck_code_head"]
    if m.classifier is None:
        m.classifier = AUTO_CLASSIFIER
    if m.bottleneck_pool is None:
        h, w = Obfuscator.feature_hw(tuple(cfg.data.image_size))
        pool = BOTTLENECK_DEFAULTS["bottleneck_pool"]
        m.bottleneck_pool = pool if min(h, w) // pool >= MIN_SENT_HW else 1  # C's VGG blocks pool 3 more times
    p = params(cfg)
    if not p["adversaries"]:
        no_adversarial(cfg)
    if m.bottleneck_code_head != AUTO_HEAD:
        resolve_head_dependents(cfg)
    else:  # resolved when the run is created; a user's own warm epochs need no head to be wrong
        check_warm(cfg)


def check_warm(cfg: RunConfig) -> None:
    """A set ``warm_epochs`` must leave the bottleneck stage-1 epochs of its own."""
    warm = params(cfg)["warm_epochs"]
    if warm > 0 and warm >= cfg.train.epochs_pretrain:
        raise ConfigError(f"config.yaml method.warm_epochs ({warm}) must be below train.epochs_pretrain "
                          f"({cfg.train.epochs_pretrain}): the bottleneck needs stage-1 epochs of its own")


def resolve_head_dependents(cfg: RunConfig) -> None:
    """What depends on the (resolved) code head: ``model.classifier: auto`` (:func:`auto_classifier`) and
    ``warm_epochs: -1`` (:func:`auto_warm_epochs`), checked against stage 1."""
    m = cfg.model
    if m.classifier == AUTO_CLASSIFIER:
        m.classifier = auto_classifier(m.bottleneck_code, m.bottleneck_code_head)
    p = params(cfg)
    seeded = whole_code_head(m.bottleneck_code, m.bottleneck_code_head)  # seed_code_head starts it after the warm ones
    if p["warm_epochs"] < 0:
        cfg.params = {**cfg.params, "warm_epochs": auto_warm_epochs(cfg.train.epochs_pretrain, bottleneck_ramp(p),
                                                                    seeded)}
    if p["audit_from"] == "auto":
        cfg.params = {**cfg.params, "audit_from": "full_weight" if seeded else "last"}
    check_warm(cfg)


def auto_classifier(code: int, code_head: str | None) -> str:
    """C behind a code head of C's architecture: ``linear``, started as the exact decoder of the seeded code
    (:func:`seed_code_decoder`), so C starts where the warm head ended (State Farm: behaviour 0.867 against 0.718
    with the paper's C learning to read the code from a random start, benchmarks/results/statefarm_cpu.md); behind
    any other bottleneck the paper's C (``vgg``)."""
    return "linear" if whole_code_head(code, code_head) else "vgg"


def resolve_code_head(cfg: RunConfig, task_specs: list[AttributeSpec]) -> None:
    """``model.bottleneck_code_head: auto`` chosen by :func:`auto_code_head` from the intended attributes' classes and
    recorded under ``meta.code_head_rule``; then the warm epochs, which depend on the head."""
    m = cfg.model
    if m.bottleneck_code_head == AUTO_HEAD:
        counts = [s.num_classes for s in task_specs]
        m.bottleneck_code_head = auto_code_head(counts, m.bottleneck_code or 0, m.bottleneck_code_depth)
        cfg.meta["code_head_rule"] = {
            "rule": "C's architecture (vgg) when an intended attribute has more than 2 classes, else the MLP head; "
                    "the MLP head without a code or with code depth", "classes": counts,
            "code_head": m.bottleneck_code_head}
    resolve_head_dependents(cfg)


def auto_prediction(class_counts: list[int], code: int, code_head: str | None, classifier: str | None) -> list[int]:
    """``model.bottleneck_prediction`` left unset: the phone sends C's prediction (the classes per intended attribute)
    behind a code head of C's architecture read by a linear C, else its code (``[]``). That phone already computes
    C's sufficient statistic, and C's K - 1 continuous values per K-class attribute carry the frames' detail within a
    class: State Farm's driver read 0.31 on split 0 from the code's noise-free mean (an attacker averaging unlimited
    queries), and 0.051-0.065 at every m on two splits with C's prediction sent, behaviour unchanged (0.939 / 0.933;
    benchmarks/results/statefarm_cpu.md, last section). Behind the small MLP head
    (binary intended attributes) the one value per attribute met every goal on CelebA's six sets, and stays sent. A rule
    of the code applied to the run's configuration and the training data's attributes, recorded under
    ``meta.prediction_rule``."""
    return list(class_counts) if whole_code_head(code, code_head) and classifier == "linear" else []


def resolve_prediction(cfg: RunConfig, task_specs: list[AttributeSpec]) -> None:
    """``model.bottleneck_prediction`` unset: chosen by :func:`auto_prediction` and recorded; a set one is checked
    against the intended attributes."""
    m = cfg.model
    counts = [s.num_classes for s in task_specs]
    if m.bottleneck_prediction is None:
        m.bottleneck_prediction = auto_prediction(counts, m.bottleneck_code or 0, m.bottleneck_code_head, m.classifier)
        cfg.meta["prediction_rule"] = {
            "rule": "send C's predicted class (its centroid) behind a code head of C's architecture read by a linear "
                    "C, else the code", "classes": counts, "prediction": m.bottleneck_prediction}
    elif m.bottleneck_prediction and list(m.bottleneck_prediction) != counts:
        raise ConfigError(f"config.yaml model.bottleneck_prediction {list(m.bottleneck_prediction)} must list the "
                          f"intended attributes' classes {counts} (or be [] to send the code)")
    if m.bottleneck_prediction and m.classifier != "linear":
        raise ConfigError(f"config.yaml model.bottleneck_prediction needs a linear C (model.classifier: linear), whose "
                          f"read-out the phone applies; got {m.classifier!r}")


class HardenedTrainer(Trainer):
    """Algorithm 1's stages with the bottleneck, the dependence penalty, the ensemble and the audit."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.params = params(self.cfg)
        self.bank = RowBank(self.params["dependence_bank"])
        self.bottleneck = bottleneck_of(self.modules.obfuscator)
        m = self.cfg.model
        shape = feature_shape(self.cfg)
        self.critic = (ConditionalCritic(self.params["critic"], shape, self.task_specs, self.private_specs, m.width,
                                         m.fc_width, self.cfg.train.lr_attacker, self.params["critic_restart_every"],
                                         self.device)
                       if self.params["mu_critic"] > 0 and self.has_private else None)
        n_priv = max(1, sum(s.num_outputs for s in self.private_specs))
        members = [build_adversary(name, shape, n_priv, m.width, m.fc_width, m.batch_norm).to(self.device)
                   for name in self.params["adversaries"]]
        self.ensemble = (AdversaryEnsemble(members, list(self.params["adversaries"]), self.private_specs,
                                           self.cfg.train.lr_attacker, self.params["restart_every"],
                                           self.params["objective"], self.params["against"])
                         if members and self.has_private else None)
        self.audit_settings = AuditSettings(self.params["audit_images"], self.params["audit_val_images"],
                                            self.params["audit_epochs"], seed=self.cfg.train.seed)
        self.phases = (0,) + (2,) * self.params["attacker_steps"]
        if self.params["init_from"]:
            self.initialise_front(Path(self.params["init_from"]))
        self.aux = None
        if self.bottleneck is not None and (self.params["aux_epochs"] > 0 and self.params["aux_weight"] > 0
                                            or self.params["warm_epochs"] > 0):
            front = self.modules.obfuscator.front
            hw = front.feature_hw(tuple(self.cfg.data.image_size))
            n_task = sum(s.num_outputs for s in self.task_specs)
            self.aux = build_classifier("vgg", front.out_channels, hw, n_task, width=m.width, fc_width=m.fc_width,
                                        batch_norm=m.batch_norm, dropout=m.dropout).to(self.device)
            self.aux_optimizer = torch.optim.Adam(self.aux.parameters(), self.cfg.train.lr,
                                                  weight_decay=self.cfg.train.weight_decay)
            self.optimizers["aux"] = self.aux_optimizer  # checkpointed with the head: a resumed warm epoch goes on

    @classmethod
    def resolve_at_creation(cls, cfg: RunConfig, task_specs: list[AttributeSpec]) -> None:
        """The code head from the intended attributes (``auto``), the warm epochs that go with it and whether the phone
        sends C's prediction."""
        resolve_code_head(cfg, task_specs)
        resolve_prediction(cfg, task_specs)

    def module_dict(self) -> dict[str, nn.Module]:
        """O, C, AR, AC and, when there is one, the warm epochs' auxiliary head (checkpointed, so a run killed in a
        warm epoch resumes with the head it had; runs checkpointed before it was kept resume with a fresh one)."""
        aux = getattr(self, "aux", None)
        return {**super().module_dict(), **({"aux": aux} if aux is not None else {})}

    def optional_state(self) -> tuple[str, ...]:
        """The auxiliary head and its optimiser: absent from checkpoints written before they were kept."""
        return ("aux",)

    def final_modules(self) -> dict[str, nn.Module]:
        """The run's four modules (the auxiliary head is training scaffolding, not part of the pipeline)."""
        return dict(self.modules.items())

    def initialise_front(self, run_dir: Path) -> None:
        """Load O's VGG blocks from a finished run (a later resume overwrites them with the checkpoint)."""
        final = RunDir(run_dir).final
        if not final.is_file():
            raise ConfigError(f"config.yaml method.init_from: {final} not found (is {run_dir} a finished run?)")
        target = self.modules.obfuscator.front if self.bottleneck is not None else self.modules.obfuscator
        load_modules({"obfuscator": target}, final)

    @classmethod
    def cache_signature(cls, cfg: RunConfig, stage: int) -> dict[str, Any]:
        """Every stage depends on the bottleneck and the hardened parameters."""
        m = cfg.model
        return {"hardened": dict(cfg.params), "bottleneck": [m.bottleneck_channels, m.bottleneck_pool,
                                                               m.bottleneck_norm, m.bottleneck_sigma,
                                                               m.bottleneck_learn_sigma, m.bottleneck_code]}

    # ----------------------------------------------------------------- the obfuscator's regularisers
    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images as O sees them (the modules' input transform, if any; hardened declares none)."""
        transform = self.modules.input_transform
        return transform(images) if transform else images

    def sent_features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy sent features, their deterministic mean) for ``batch``, with gradients."""
        images = self.prepare_images(batch.images)
        if self.bottleneck is None:
            feats = self.modules.obfuscator(images)
            return feats, feats
        mean = self.modules.obfuscator.mean(images)
        return self.bottleneck.add_noise(mean), mean

    def regularisers(self, batch: Batch, mean: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """mu * dep(mean, private | task) + mu_critic * CE(prior(private | task), critic(mean, task)) + mu_image *
        dep(mean, image | task) + mu_spread * within-class share of the mean's variance + beta * VIB KL."""
        loss, out = mean.new_zeros(()), {}
        weight = self.params["mu"] * self.ramp("mu_ramp_epochs")
        if weight > 0 and self.has_private:
            feats, private, task = self.bank.extend(mean.reshape(len(mean), -1), batch.private, batch.task)
            dep = within_class_dependence(feats, private, task, self.params["dependence"])
            loss, out["dep"] = loss + weight * dep, dep.item()
        if self.critic is not None:  # trained at every step; its term on O ramps in
            for i in range(self.params["critic_steps"]):
                out["L_critic"] = self.critic.step(mean, batch.task, batch.private, count=i == 0)
            weight = self.params["mu_critic"] * self.ramp("critic_ramp_epochs")
            if weight > 0:
                term, out["critic_kl"] = self.critic.obfuscator_loss(mean, batch.task)
                loss = loss + weight * term
        weight = self.params["mu_image"] * self.ramp("image_ramp_epochs")
        if weight > 0:
            pool = self.params["image_pool"]
            small = F.avg_pool2d(batch.images, pool) if pool > 1 else batch.images
            dep = conditional_dependence(mean, small, batch.task, self.params["dependence"])
            loss, out["dep_img"] = loss + weight * dep, dep.item()
        weight = self.params["mu_spread"] * self.ramp("spread_ramp_epochs")
        if weight > 0:
            spread = within_class_spread(mean, batch.task)
            loss, out["spread"] = loss + weight * spread, spread.item()
        if self.params["beta"] > 0 and self.bottleneck is not None:
            kl = self.bottleneck.kl(mean)
            loss, out["kl"] = loss + self.params["beta"] * kl, kl.item()
        return loss, out

    def ramp(self, key: str) -> float:
        """A penalty's share of its weight now: 0 in the first stage-1 epoch that trains the bottleneck, growing
        linearly to 1 over ``params[key]`` epochs (a cold bottleneck first learns the intended label); 1 without
        a ramp and in every later stage."""
        ramp = self.params[key]
        if not ramp or self.position.stage != 0:
            return 1.0
        return min(1.0, max(0.0, (self.position.epoch - self.params["warm_epochs"]) / ramp))

    def step_pretrain(self, batch: Batch, step: int) -> dict[str, float]:
        """Stage 1 (with the noise curriculum of ``sigma_ramp_epochs``, if any: the training noise's share of sigma
        for this step; validation, audits, attacks and deployment always see the full noise)."""
        if self.bottleneck is None or not self.params["sigma_ramp_epochs"]:
            return self._step_pretrain(batch, step)
        self.bottleneck.noise_scale = self.ramp("sigma_ramp_epochs")
        try:
            return self._step_pretrain(batch, step)
        finally:
            self.bottleneck.noise_scale = 1.0

    def _step_pretrain(self, batch: Batch, step: int) -> dict[str, float]:
        """Stage 1: O (with bottleneck) and C on L(C) + regularisers (+ the auxiliary head's L(C) early on)."""
        self.modules.set_trainable("obfuscator", "classifier")
        warm = self.params["warm_epochs"]
        if self.warming(0):  # Encoder-style: O's front and the head only
            self.aux.train()
            l_aux = attribute_loss(self.aux(self.modules.obfuscator.front(self.prepare_images(batch.images))),
                                   batch.task, self.task_specs)
            self.aux_optimizer.zero_grad(set_to_none=True)
            self._update(("obfuscator",), l_aux)
            self.sync(self.aux.parameters())
            self.aux_optimizer.step()
            return {"L_aux": l_aux.item()}
        if self.aux is None or self.position.epoch >= warm + self.params["aux_epochs"]:
            feats, mean = self.sent_features(batch)
            l_c = attribute_loss(self.modules.classifier(feats), batch.task, self.task_specs)
            reg, out = self.regularisers(batch, mean)
            self._update(("obfuscator", "classifier"), l_c + reg)
            return {"L_C": l_c.item(), **out}
        self.aux.train()
        front = self.modules.obfuscator.front(self.prepare_images(batch.images))
        mean = self.bottleneck.mean(front)
        l_c = attribute_loss(self.modules.classifier(self.bottleneck.add_noise(mean)), batch.task, self.task_specs)
        l_aux = attribute_loss(self.aux(front), batch.task, self.task_specs)
        reg, out = self.regularisers(batch, mean)
        self.aux_optimizer.zero_grad(set_to_none=True)
        self._update(("obfuscator", "classifier"), l_c + reg + self.params["aux_weight"] * l_aux)
        self.sync(self.aux.parameters())
        self.aux_optimizer.step()
        return {"L_C": l_c.item(), "L_aux": l_aux.item(), **out}

    def step_attackers(self, batch: Batch) -> dict[str, float]:
        """The run's AR/AC (diagnostics and the reconstruction term) and the ensemble, on detached features."""
        out = super().step_attackers(batch)
        if self.ensemble is not None:
            out.update(self.ensemble.step(self.features(batch, grad=False), batch.private))
        return out

    def step_defend(self, batch: Batch) -> dict[str, float]:
        """Stage 3, O+C: L(C) + regularisers + lambda1 * ensemble objective + lambda2 * (L(AR2) - L(AR1))."""
        self.modules.set_trainable("obfuscator", "classifier")
        feats, mean = self.sent_features(batch)
        l_c = attribute_loss(self.modules.classifier(feats), batch.task, self.task_specs)
        reg, out = self.regularisers(batch, mean)
        loss = l_c + reg
        defend = self.cfg.privacy.defend
        if self.ensemble is not None and defend in ("both", "attributes"):
            adv, info = self.ensemble.obfuscator_loss(feats, batch.private)
            loss, out = loss + self.cfg.privacy.lambda1 * adv, {**out, **info}
        if defend in ("both", "reconstruction") and self.cfg.privacy.lambda2 > 0:
            recon = self.modules.reconstructor(feats)
            kind = self.cfg.privacy.reconstruction_loss
            l_ar1, l_ar2 = reconstruction_losses(recon, [batch.images, self.noise], kind, self.msssim)
            loss, out = loss + self.cfg.privacy.lambda2 * (l_ar2 - l_ar1), {**out, "L_AR1": l_ar1.item()}
        self._update(("obfuscator", "classifier"), loss)
        return {"L_C": l_c.item(), **out}

    def step_cycle(self, batch: Batch, step: int) -> dict[str, float]:
        """Stage 3: one O+C step, then ``attacker_steps`` attacker steps."""
        phase = self.phases[step % len(self.phases)]
        return {"phase": phase, **(self.step_defend(batch) if phase == 0 else self.step_attackers(batch))}

    # ----------------------------------------------------------------- audit and checkpoint choice
    def audit_due(self, stage: int) -> bool:
        """Audit after the last stage-1 epoch (and the earlier ones ``audit_from`` names) and after every adversarial
        epoch."""
        if not (self.params["audit"] and self.has_private):
            return False
        if stage != 0:
            return stage == 2
        epoch, last = self.position.epoch, self.epochs(0) - 1
        first = {"last": last, "full_weight": self.params["warm_epochs"] + bottleneck_ramp(self.params),
                 "ramps": self.params["warm_epochs"] + 1,
                 "auto": last}[self.params["audit_from"]]  # unresolved: a run written before the setting
        return epoch == last or (self.bottleneck is not None and min(first, last) <= epoch)

    def warming(self, stage: int) -> bool:
        """Whether ``stage``'s current epoch is a warm epoch (O's front trains with the auxiliary head; C does not)."""
        return stage == 0 and self.aux is not None and self.position.epoch < self.params["warm_epochs"]

    @torch.no_grad()
    def warm_accuracy(self, split: str = "val") -> dict[str, float]:
        """Accuracy per intended attribute of the warm epochs' auxiliary head on O's front (what those epochs
        train; C's accuracy stays at the majority rate until the bottleneck epochs train it)."""
        self.modules.set_trainable()
        self.aux.eval()
        loader = self.data.loader(split, self.cfg.train.eval_batch_size, limit=self.cfg.train.max_val_images,
                                  rank=self.sync.rank, world=self.sync.world)
        sums = torch.zeros(1 + len(self.task_specs), dtype=torch.float64)
        for batch in loader.epoch(0):
            batch = batch.to(self.device)
            front = self.modules.obfuscator.front(self.prepare_images(batch.images))
            sums[0] += len(batch.images)
            sums[1:] += (predictions(self.aux(front), self.task_specs) == batch.task).sum(0).double().cpu()
        sums = self.sync.reduce_sum(sums)
        n = max(sums[0].item(), 1.0)
        return {s.name: sums[1 + i].item() / n for i, s in enumerate(self.task_specs)}

    def validate(self, stage: int, split: str = "val") -> dict[str, Any]:
        """The usual validation (in a warm epoch also the auxiliary head's accuracy; after the last one, a code head of
        C's architecture starts from that head), plus the audit (and the checkpoint choice) when one is due. When the
        phone sends C's prediction, a validation first calibrates it on this epoch's weights; the test split is read
        with the calibration the deployed weights carry."""
        sent = (self.calibrate_prediction()  # what the deployed pipeline sends from this epoch's weights
                if split == "val" and self.bottleneck is not None and self.bottleneck.prediction else None)
        out = super().validate(stage, split)
        if sent is not None:
            out["prediction"] = sent
        if self.warming(stage):
            out["warm_acc"] = self.warm_accuracy(split)
            if split == "val" and self.bottleneck.whole_head:
                self.keep_best_warm(out["warm_acc"])
            if split == "val" and self.position.epoch + 1 == self.params["warm_epochs"] and self.bottleneck.whole_head:
                out["warm_restored"] = self.restore_best_warm()
                out["code_seeded"] = seed_code_head(self.bottleneck.head, self.aux, self.task_specs)
                if out["code_seeded"] and isinstance(self.modules.classifier, LinearProbe):
                    out["decoder_seeded"] = self.seed_decoder()
                if out["code_seeded"]:
                    out["lr"] = self.fine_tune_rate()
        if split != "val" or not self.audit_due(stage) or self.sync.rank != 0:
            return out
        self.modules.set_trainable()
        audit = audit_leakage(lambda x: self.encode(x), self.data, self.private_specs, self.audit_settings, self.device)
        utility = sum(out["C_acc"].values()) / len(out["C_acc"])
        out["audit"] = audit
        self.record_candidate({"stage": ("pretrain", "attacker", "adversarial")[stage], "epoch": self.position.epoch + 1,
                               "utility": utility, "leakage": audit["leakage"]})
        return out

    def fine_tune_rate(self) -> float:
        """Set O's and C's learning rate for the epochs after the seeding (:meth:`base_rate`) and return it."""
        rate = self.base_rate(seeded=True)
        self.set_rate(rate)
        return rate

    def base_rate(self, seeded: bool | None = None) -> float:
        """The run's rate, or from the seeding of a whole code head on (after the last warm epoch) ``seeded_lr_scale``
        times it (Adam's first steps on a copied head move every weight by about the rate whatever its gradient,
        which undoes the copy at full rate: State Farm's validation swung by up to 11 points from one bottleneck epoch
        to the next). ``train.lr_drop_epochs`` decays this rate, not the run's."""
        if seeded is None:  # a whole head is seeded after the warm epochs (the auxiliary head's)
            seeded = self.bottleneck.whole_head and self.aux is not None and not self.warming(self.position.stage)
        return self.cfg.train.lr * (self.params["seeded_lr_scale"] if seeded else 1.0)

    def keep_best_warm(self, accuracy: dict[str, float]) -> None:
        """Keep O's front and the warm head of the warm epoch with the best mean validation accuracy so far (what a
        seeded code head starts from: the warm head's validation swings from epoch to epoch)."""
        record = self.run.checkpoints / f"{WARM_BEST}.json"
        best = json.loads(record.read_text())["accuracy"] if record.is_file() else -1.0
        mean = sum(accuracy.values()) / max(1, len(accuracy))
        if mean > best and self.sync.rank == 0:
            save_modules({"front": self.modules.obfuscator.front, "aux": self.aux},
                         self.run.checkpoints / f"{WARM_BEST}.safetensors")
            atomic_write_json(record, {"epoch": self.position.epoch + 1, "accuracy": mean})

    def restore_best_warm(self) -> int | None:
        """Load the best warm epoch's front and head (kept by :meth:`keep_best_warm`); returns its epoch."""
        record = self.run.checkpoints / f"{WARM_BEST}.json"
        if not record.is_file():
            return None
        epoch = json.loads(record.read_text())["epoch"]
        if epoch != self.position.epoch + 1:
            load_modules({"front": self.modules.obfuscator.front, "aux": self.aux},
                         self.run.checkpoints / f"{WARM_BEST}.safetensors")
        return epoch

    @torch.no_grad()
    def seed_decoder(self, images: int = 2000) -> bool:
        """Start a linear C as the exact decoder of a freshly seeded code: the bottleneck's normalisation takes the
        code's mean and variance on up to ``images`` training images, and C maps the normalised code (averaged over the
        sent map's positions, which averages the noise) back to the warm head's logits, so C starts where the warm head
        ended instead of at chance."""
        codes = self.training_codes(images, self.bottleneck.head).double()
        return seed_code_decoder(self.modules.classifier, self.bottleneck.norm, codes.mean(0), codes.var(0),
                                 self.task_specs)

    @torch.no_grad()
    def calibrate_prediction(self, images: int = PREDICTION_IMAGES) -> dict[str, Any]:
        """Give the deployed phone C's current read-out and the class centroids of the normalised codes of up to
        ``images`` training images (:meth:`NoisyBottleneck.calibrate_prediction`), before every validation (and so
        every audited candidate, whose saved weights carry them)."""
        if not isinstance(self.modules.classifier, LinearProbe):
            raise ConfigError("model.bottleneck_prediction needs a linear C (model.classifier: linear)")
        codes = self.training_codes(images, self.bottleneck.normalised_code)
        return self.bottleneck.calibrate_prediction(self.modules.classifier.linear, codes)

    @torch.no_grad()
    def training_codes(self, images: int, code: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``code`` (a function of O's front features) of the first ``images`` training images, every module in eval
        mode."""
        self.modules.set_trainable()
        loader = self.data.loader("train", self.cfg.train.eval_batch_size, limit=images)
        front = self.modules.obfuscator.front
        return torch.cat([code(front(self.prepare_images(b.to(self.device).images))) for b in loader.epoch(0)])

    @property
    def selection_path(self) -> Path:
        """Where the audit's candidates and choice are written."""
        return self.run.path / SELECTION_FILE

    def candidate_file(self, candidate: dict[str, Any]) -> Path:
        """Where an audited epoch's weights are kept until the run deploys its choice."""
        return self.run.checkpoints / f"audit-{candidate['stage']}-{candidate['epoch']}.safetensors"

    def record_candidate(self, candidate: dict[str, Any]) -> None:
        """Add an audited epoch and keep its weights (a later, more useful stage-1 epoch can raise the reference and
        so make an earlier epoch the choice); the choice so far is written beside them."""
        state = json.loads(self.selection_path.read_text()) if self.selection_path.is_file() else {"candidates": []}
        history = [c for c in state["candidates"] if (c["stage"], c["epoch"]) != (candidate["stage"], candidate["epoch"])]
        history.append(candidate)
        reference = max((c["utility"] for c in history if c["stage"] == "pretrain"), default=candidate["utility"])
        choice = select_epoch(history, reference, self.params["max_utility_drop"])
        save_modules({k: getattr(self.modules, k) for k in DEPLOYED}, self.candidate_file(candidate))
        atomic_write_json(self.selection_path, {"candidates": history, "reference_utility": reference,
                                                "max_utility_drop": self.params["max_utility_drop"],
                                                "selected": choice})

    def chosen_weights(self) -> Path | None:
        """The audit's choice's weights (a run written before per-candidate files: its single kept choice); the other
        candidates' files are removed."""
        choice = json.loads(self.selection_path.read_text())["selected"]
        chosen = self.candidate_file(choice)
        for other in self.run.checkpoints.glob("audit-*.safetensors"):
            if other != chosen:
                other.unlink()
        legacy = self.run.checkpoints / AUDIT_BEST
        return chosen if chosen.is_file() else legacy if legacy.is_file() else None

    def fit(self) -> dict[str, Any]:
        """Train to the end, then deploy the audit's choice as the final weights."""
        last = super().fit()
        best = self.chosen_weights() if self.sync.rank == 0 and self.selection_path.is_file() else None
        if best is not None:
            # the deployed pipeline (O, C) is the audit's choice; the diagnostic AR/AC stay as trained last
            load_modules({k: getattr(self.modules, k) for k in DEPLOYED}, best)
            save_modules(dict(self.modules.items()), self.run.final,
                         metadata={"run": self.cfg.name, "method": self.cfg.method,
                                   "selected": json.dumps(json.loads(self.selection_path.read_text())["selected"])})
        return last


@torch.no_grad()
def seed_code_head(head: nn.Module, classifier: nn.Module, specs: list[AttributeSpec]) -> bool:
    """Start a code head of C's architecture from a trained classifier of the same architecture: every layer copied
    but the last, whose rows become, per intended attribute, the classifier's logit (binary) or its K - 1 logit
    differences against the last class (K classes): a sufficient statistic of its prediction, in as many values as
    the width rule gives that attribute. Returns False (and changes nothing) when the shapes do not match."""
    last, source = head.head[-1], classifier.head[-1]
    rows, biases, offset = [], [], 0
    for spec in specs:
        n = spec.num_outputs
        w, b = source.weight[offset:offset + n], source.bias[offset:offset + n]
        rows.append(w if spec.binary else w[:-1] - w[-1:])
        biases.append(b if spec.binary else b[:-1] - b[-1:])
        offset += n
    weight, bias = torch.cat(rows), torch.cat(biases)
    state = classifier.state_dict()
    mine = head.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith(f"head.{len(head.head) - 1}.")}
    if weight.shape != last.weight.shape or any(mine[k].shape != v.shape for k, v in body.items() if k in mine):
        return False
    head.load_state_dict({**mine, **body})
    last.weight.copy_(weight)
    last.bias.copy_(bias)
    return True


@torch.no_grad()
def seed_code_decoder(classifier: nn.Module, norm: nn.Module, mean: torch.Tensor, var: torch.Tensor,
                      specs: list[AttributeSpec]) -> bool:
    """Make a linear C (:class:`LinearProbe`) the exact decoder of a seeded code whose per-value ``mean`` and ``var``
    the bottleneck's normalisation (BatchNorm without affine) now takes as its running statistics: C's logits are the
    code's values de-normalised, per binary attribute its logit, per K-class one its K - 1 logit differences and a 0
    for the last class (what :func:`seed_code_head` put into the code). Returns False (nothing changed) for another C
    or normalisation, or a code of another width."""
    if not isinstance(classifier, LinearProbe) or not isinstance(norm, nn.BatchNorm1d) or norm.affine:
        return False
    k = len(mean)
    layer = classifier.linear
    if layer.in_features != k or sum(code_width(s.num_classes) for s in specs) != k:
        return False
    norm.running_mean.copy_(mean.to(norm.running_mean))
    norm.running_var.copy_(var.to(norm.running_var))
    scale = torch.sqrt(var + norm.eps)
    weight, bias = torch.zeros_like(layer.weight), torch.zeros_like(layer.bias)
    row, col = 0, 0
    for spec in specs:
        width = code_width(spec.num_classes)
        for j in range(width):  # the last class of a K-class attribute keeps logit 0
            weight[row + j, col + j], bias[row + j] = scale[col + j], mean[col + j]
        row, col = row + spec.num_outputs, col + width
    layer.weight.copy_(weight)
    layer.bias.copy_(bias)
    return True


HARDENED = register_method(Method(
    "hardened", "Hardened", "Noisy bottleneck whose mean is a code of the intended labels + within-class dependence "
    "penalties + restarted adversary ensemble + audit-chosen checkpoint (docs/hardened.md)",
    params=HardenedParams, configure=configure, trainer_cls=HardenedTrainer, uses_lambda=True,
    tunable_config={"model.bottleneck_sigma": {"type": "float", "low": 0.5, "high": 2.0, "log": True}}))
