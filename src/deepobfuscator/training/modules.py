"""The four modules of a run (O, C, AR, AC), built from a config and the selected attributes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from ..config import RunConfig
from ..data.index import AttributeSpec
from ..models import build_classifier, build_reconstructor
from ..models.bottleneck import build_run_obfuscator
from ..models.factorised import Factorisation

MODULE_NAMES = ("obfuscator", "classifier", "reconstructor", "adversary")
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Modules:
    """O (obfuscator), C (classifier), AR (reconstructor), AC (adversary classifier), and the defence's transforms.

    ``input_transform`` (applied to raw [0, 1] images before O) and ``feature_transform`` (applied
    to O's output before it is sent) are set by the run's method; None means identity. They are
    not trained with the four modules and are not part of their checkpoints.
    """

    obfuscator: nn.Module
    classifier: nn.Module
    reconstructor: nn.Module
    adversary: nn.Module
    input_transform: Transform | None = None
    feature_transform: Transform | None = None

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """What the phone sends for ``images``: input transform, O, then feature transform."""
        feats = self.obfuscator(self.input_transform(images) if self.input_transform else images)
        return self.feature_transform(feats) if self.feature_transform else feats

    def factorisation(self) -> Factorisation | None:
        """What :meth:`encode` declares about its randomness: a deterministic prefix plus a noise tail, when O or
        the feature transform declares one (``noise_split()``) and nothing random comes before it; else None
        (deterministic, or random in a way nothing declares, e.g. pixel noise)."""
        if self.input_transform is not None:
            return None
        split = getattr(self.obfuscator, "noise_split", None)
        own = split() if split is not None else None
        feature = getattr(self.feature_transform, "noise_split", None)
        if own is not None:
            return own if self.feature_transform is None else None
        if feature is None:
            return None
        return feature().after(self.obfuscator)

    def items(self) -> list[tuple[str, nn.Module]]:
        """(name, module) pairs in a fixed order."""
        return [(n, getattr(self, n)) for n in MODULE_NAMES]

    def to(self, device: str) -> "Modules":
        """Move every module to ``device``."""
        for _, m in self.items():
            m.to(device)
        if isinstance(self.feature_transform, nn.Module):
            self.feature_transform.to(device)
        return self

    def set_trainable(self, *names: str) -> None:
        """Train mode + gradients for ``names``; eval mode and no parameter gradients for the rest."""
        set_trainable(self.items(), names)


def set_trainable(modules: Iterable[tuple[str, nn.Module]], names: Iterable[str]) -> None:
    """Train mode + gradients for the modules named in ``names``; eval mode and frozen parameters for the rest."""
    names = set(names)
    for name, module in modules:
        on = name in names
        module.train(on)
        module.requires_grad_(on)


def run_obfuscator(cfg: RunConfig, width: float | None = None,
                   image_size: tuple[int, int] | None = None) -> nn.Module:
    """The run's on-device module: O, followed by the noisy bottleneck when ``model.bottleneck_channels`` > 0. At
    another ``width`` and ``image_size`` (e.g. the paper's scale) the same architecture, with C's default FC width
    for that width in a code head of C's architecture."""
    m = cfg.model
    fc_width = m.fc_width if width is None else None
    return build_run_obfuscator(m.width if width is None else width, m.batch_norm, m.bottleneck_channels,
                                m.bottleneck_pool or 1, m.bottleneck_norm, m.bottleneck_sigma or 0.0,
                                m.bottleneck_learn_sigma, m.bottleneck_code or 0,
                                tuple(image_size or cfg.data.image_size), m.bottleneck_code_depth,
                                m.bottleneck_code_head, fc_width, m.dropout, tuple(m.bottleneck_prediction or ()))


def feature_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """Shape (C, h, w) of what O sends for the configured width, bottleneck and input size."""
    obf = run_obfuscator(cfg)
    h, w = obf.feature_hw(tuple(cfg.data.image_size))
    return obf.out_channels, h, w


def build_modules(cfg: RunConfig, task_specs: list[AttributeSpec], private_specs: list[AttributeSpec],
                  seed: int | None = None) -> Modules:
    """Fresh modules; initialisation is seeded from ``cfg.train.seed`` unless ``seed`` is given."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    m = cfg.model
    size = (int(cfg.data.image_size[0]), int(cfg.data.image_size[1]))
    obf = run_obfuscator(cfg)
    ch, hw = obf.out_channels, obf.feature_hw(size)
    common = dict(width=m.width, fc_width=m.fc_width, batch_norm=m.batch_norm, dropout=m.dropout)
    clf = build_classifier(m.classifier_name(), ch, hw, sum(s.num_outputs for s in task_specs), **common)
    n_priv = max(1, sum(s.num_outputs for s in private_specs))
    adv = build_classifier(m.adversary_classifier, ch, hw, n_priv, **common)
    rec = build_reconstructor(m.reconstructor, ch, hw, size, width=m.width, batch_norm=m.batch_norm)
    return Modules(obf, clf, rec, adv)
