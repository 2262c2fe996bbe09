"""Attackers by name for ``--attackers``: one :class:`~deepobfuscator.registry.Registry` of factories.

A factory returns a fresh, unfitted attacker (one per seed and repeat count). The registration order
is the run order: reconstruction floors and learned decoders come before the inversion, which starts
from the best of them.
"""
from __future__ import annotations

from ..registry import Registry
from .attribute import AttributeAttacker
from .base import Attacker, AttackerFactory
from .floors import ConstantImage
from .inversion import WhiteBoxInversion
from .kernel import KnownNoiseAttacker
from .reconstruction import LearnedReconstructor

ATTACKERS: Registry[AttackerFactory] = Registry("attacker")


def register_attacker(name: str, factory: AttackerFactory, description: str = "", *, replace: bool = False
                      ) -> AttackerFactory:
    """Add an attacker factory under ``name`` (the attacker's own ``name`` must match); the listing shows
    ``description``, by default the attacker's own."""
    return ATTACKERS.add(name, factory, description or factory().description, replace=replace)


def get_attackers(names: list[str] | None) -> list[Attacker]:
    """Fresh attackers for ``names`` (None: every registered one), in registration order, checked."""
    chosen = ATTACKERS.names() if names is None else names
    for name in chosen:
        ATTACKERS.get(name)  # unknown names raise with a suggestion
    out = []
    for name in ATTACKERS.names():
        if name in chosen:
            attacker = ATTACKERS.get(name)()
            if attacker.name != name or attacker.kind not in ("reconstruction", "attribute"):
                raise ValueError(f"attacker '{name}': factory made '{attacker.name}' of kind '{attacker.kind}' "
                                 "(name must match; kind must be reconstruction or attribute)")
            out.append(attacker)
    return out


for _name, _factory, _text in (  # "": the attacker's own description
    ("mean_face", lambda: ConstantImage("mean_face", "mean", "floor: the mean training face"),
     "floor: the mean training face for every query"),
    ("median_face", lambda: ConstantImage("median_face", "median", "floor: the median training face"),
     "floor: the median training face for every query"),
    ("constant", lambda: ConstantImage("constant", "msssim", "floor: best constant image (MS-SSIM optimised)"),
     "floor: the constant image with the best validation MS-SSIM (mean, median or optimised)"),
    ("mirror", lambda: LearnedReconstructor("mirror", "mirror", "AR: mirror of O (paper Table 1)"), ""),
    ("urec1", lambda: LearnedReconstructor("urec1", "urec1", "URec#1: one-level U-Net on the features"), ""),
    ("urec2", lambda: LearnedReconstructor("urec2", "urec2", "URec#2: two-level U-Net on the features"), ""),
    ("resrec", lambda: LearnedReconstructor("resrec", "resrec", "ResRec: residual blocks on the features"), ""),
    ("inversion", WhiteBoxInversion, "white-box inversion of O, refining the best decoder (or noise)"),
    ("vgg", lambda: AttributeAttacker("vgg", "vgg", "C's architecture (VGG16 blocks 3-5 + FCs)"), ""),
    ("resnet", lambda: AttributeAttacker("resnet", "resnet", "small ResNet head"), ""),
    ("linear", lambda: AttributeAttacker("linear", "linear", "linear probe on globally pooled features"), ""),
    ("mlp", lambda: AttributeAttacker("mlp", "mlp", "MLP on the flattened features"), ""),
    ("known_noise", KnownNoiseAttacker, "posterior under the declared noise (kernel classifier on noise-free means; "
     "fast-path pipelines only)"),
    ("oracle", lambda: AttributeAttacker("oracle", "mlp", "floor: MLP on the deployed C's logits",
                                         through_classifier=True),
     "floor: MLP on the deployed C's output logits (what serving the task must leak)"),
):
    register_attacker(_name, _factory, _text)

