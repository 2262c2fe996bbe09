"""Attribute-inference attackers: a classifier trained from scratch per private attribute (BCE for binary,
cross-entropy for multi-class attributes) with the shared fit loop, scored overall and within each class of
every intended attribute; the oracle floor is the same attacker reading the deployed C's logits."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import AttributeSpec
from ..losses import attribute_loss, predictions, probabilities
from ..metrics import balanced_accuracy, classification_report, majority_rate
from .base import AttackContext, AttackData, Evaluation, attacker_seed, precision_settings
from .features import FeatureBatch, FeatureSet
from .fit import fit_model, validation_loss
from .heads import build_from_spec, classifier_spec


@torch.no_grad()
def predict_logits(model: nn.Module, features: FeatureSet, ctx: AttackContext) -> torch.Tensor:
    """Logits of ``model`` on every row of ``features``."""
    model.eval()
    out = [model(b.features.to(ctx.device)).float().cpu() for b in features.batches(ctx.settings.eval_batch_size)]
    return torch.cat(out)


def score_logits(logits: torch.Tensor, labels: np.ndarray, spec: AttributeSpec, n_boot: int, seed: int) -> dict[str, Any]:
    """Classification report of one attribute's logits against ``labels``."""
    pred = predictions(logits, [spec])[:, 0].numpy()
    scores = probabilities(logits, [spec])[0].numpy()
    return classification_report(labels, pred, scores, n_boot=n_boot, seed=seed)


def within_classes(pred: np.ndarray, labels: np.ndarray, test: FeatureSet, task_specs: list[AttributeSpec]
                   ) -> dict[str, dict[str, dict[str, Any]]]:
    """Balanced accuracy (beside the majority rate and n) of ``pred`` within each class of each intended attribute,
    e.g. Male among smiling and among non-smiling faces."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in task_specs:
        try:
            group = test.labels(spec.name)
        except KeyError:
            continue
        per = {}
        for value in np.unique(group):
            keep = group == value
            name = spec.classes[int(value)] if spec.classes and int(value) < len(spec.classes) else str(int(value))
            ba = balanced_accuracy(labels[keep], pred[keep])
            per[name] = {"balanced_accuracy": None if np.isnan(ba) else round(ba, 6),
                         "majority_rate": round(majority_rate(labels[keep]), 6), "n": int(keep.sum())}
        out[spec.name] = per
    return out


def class_priors(labels: np.ndarray, spec: AttributeSpec) -> np.ndarray:
    """Share of each class among ``labels`` (clipped away from 0 so absent classes stay finite)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=spec.num_classes).astype(float)
    return np.clip(counts / max(counts.sum(), 1.0), 1e-6, 1.0)


def prior_offset(priors: np.ndarray, spec: AttributeSpec) -> torch.Tensor:
    """The logit offset that turns the usual decision (logit > 0, argmax) into argmax_k p(k|x) / prior_k, the
    rule that maximises balanced accuracy for calibrated probabilities."""
    if spec.binary:
        return torch.tensor([float(np.log(priors[1] / priors[0]))])
    return torch.from_numpy(np.log(priors)).float()


def balanced_decision(logits: torch.Tensor, priors: np.ndarray, spec: AttributeSpec) -> torch.Tensor:
    """Logits shifted by :func:`prior_offset` (a BCE/CE-trained head on imbalanced classes would otherwise
    predict the majority class wherever it is unsure). Ranking (AUC) is unchanged."""
    return logits - prior_offset(priors, spec)


def tune_offset(logits: torch.Tensor, labels: np.ndarray, priors: np.ndarray, spec: AttributeSpec) -> torch.Tensor:
    """The attacker's decision rule, chosen on its own validation logits: the logit offset with the best balanced
    accuracy among no offset, the prior offset and (binary) a grid of thresholds at validation-logit quantiles."""
    candidates = [torch.zeros(spec.num_outputs), prior_offset(priors, spec)]
    if spec.binary and len(logits):
        quantiles = torch.quantile(logits[:, 0].float(), torch.linspace(0.01, 0.99, 99))
        candidates += [q.reshape(1) for q in quantiles]
    scores = [balanced_accuracy(labels, predictions(logits - c, [spec])[:, 0].numpy()) for c in candidates]
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))  # ties: the earliest (simplest) rule
    return candidates[best]


def attribute_batch_loss(spec: AttributeSpec, labels: torch.Tensor, device: str):
    """The fit loop's loss for one attribute: BCE/CE of the model's logits against the rows' labels."""
    def loss(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        target = labels[batch.rows].unsqueeze(1).to(device)
        return attribute_loss(model(batch.features.to(device)), target, [spec])
    return loss


class AttributeAttacker:
    """One classifier architecture (any registered head, or ``mlp``), trained from scratch per private attribute.

    ``through_classifier``: read the deployed C's output logits instead of the features (the oracle floor:
    what any representation that serves the task must leak).
    """

    kind = "attribute"

    def __init__(self, name: str, architecture: str, description: str, through_classifier: bool = False) -> None:
        self.name, self.architecture, self.description = name, architecture, description
        self.through_classifier = through_classifier
        self.floor = through_classifier
        self.models: dict[str, nn.Module] = {}
        self.specs: dict[str, dict[str, Any]] = {}
        self.offsets: dict[str, torch.Tensor] = {}
        self.initial: nn.ModuleDict | None = None

    def start_from(self, fitted: nn.Module) -> None:
        """Start the next fit of each attribute's model from ``fitted``'s (a ModuleDict per attribute: the same
        attacker fitted at a smaller repeat count); attributes it lacks start from scratch."""
        self.initial = fitted if isinstance(fitted, nn.ModuleDict) else None

    def settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result."""
        s = ctx.settings
        return {"architecture": self.architecture, "max_epochs": s.attr_epochs, "patience": s.patience,
                "val_fraction": s.val_fraction, "lr": s.lr, "batch_size": s.batch_size,
                "max_train_images": s.max_train_images, "bootstrap": s.bootstrap,
                "mlp_hidden": s.mlp_hidden if self.architecture == "mlp" else None,
                "through_classifier": self.through_classifier, "decision": "validation-tuned", **precision_settings(s)}

    def _view(self, features: FeatureSet, data: AttackData, ctx: AttackContext) -> FeatureSet:
        if not self.through_classifier:
            return features
        if data.classifier is None:
            raise ValueError(f"attacker '{self.name}' needs the deployed classifier")
        classifier = data.classifier.eval()
        return features.mapped(lambda x: classifier(x), ctx.settings.eval_batch_size)

    def fit(self, data: AttackData, ctx: AttackContext, seed: int) -> dict[str, Any]:
        """Train one model per private attribute on ``data.train`` (early stopping on ``data.val``)."""
        train, val = self._view(data.train, data, ctx), self._view(data.val, data, ctx)
        shape = train.feature_shape
        out = {}
        for spec in data.private_specs:
            s = attacker_seed(seed, self.name, spec.name)
            torch.manual_seed(s)
            build = classifier_spec(self.architecture, shape, spec.num_outputs, ctx.cfg.model, ctx.settings.mlp_hidden)
            model = build_from_spec(build)
            warm = self.initial is not None and spec.name in self.initial
            if warm:
                model.load_state_dict(self.initial[spec.name].state_dict())
            loss = attribute_batch_loss(spec, torch.from_numpy(train.labels(spec.name)).long(), ctx.device)
            val_loss = attribute_batch_loss(spec, torch.from_numpy(val.labels(spec.name)).long(), ctx.device)
            out[spec.name] = fit_model(
                model, train, val, loss, ctx, s, ctx.settings.attr_epochs, desc=f"attack {self.name} {spec.name}",
                validate=lambda m: validation_loss(m, val, val_loss, ctx.settings.eval_batch_size, False))
            self.models[spec.name], self.specs[spec.name] = model, build
            priors = class_priors(train.labels(spec.name), spec)
            self.offsets[spec.name] = tune_offset(predict_logits(model, val, ctx), val.labels(spec.name), priors, spec)
            out[spec.name]["decision_offset"] = [round(float(v), 6) for v in self.offsets[spec.name]]
            out[spec.name]["warm_start"] = warm
        return out

    def evaluate(self, data: AttackData, ctx: AttackContext, seed: int) -> Evaluation:
        """Score each fitted model on ``data.test``: overall report plus balanced accuracy within intended classes."""
        test = self._view(data.test, data, ctx)
        results = {}
        for spec in data.private_specs:
            logits = predict_logits(self.models[spec.name], test, ctx) - self.offsets[spec.name]
            labels = test.labels(spec.name)
            report = score_logits(logits, labels, spec, ctx.settings.bootstrap, attacker_seed(seed, self.name))
            pred = predictions(logits, [spec])[:, 0].numpy()
            results[spec.name] = {**report, "within": within_classes(pred, labels, test, data.task_specs)}
        return Evaluation({"results": results})

    def state(self) -> tuple[nn.Module, dict[str, Any]] | None:
        """The fitted models (one per private attribute, in a ModuleDict) and their build specs."""
        if not self.models:
            return None
        return nn.ModuleDict(self.models), {"kind": self.kind, "attributes": self.specs,
                                            "through_classifier": self.through_classifier, "decision": "validation-tuned"}
