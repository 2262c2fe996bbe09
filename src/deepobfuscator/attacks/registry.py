"""Attacker names for `--attackers`: a dict lookup, extended with :func:`register_attacker`."""
from __future__ import annotations

import difflib
from typing import Any

from .attribute import AttributeAttack
from .inversion import WhiteBoxInversion
from .reconstruction import LearnedReconstruction

ATTACKERS: dict[str, Any] = {}


def register_attacker(attacker: Any) -> Any:
    """Add an attacker (an object with ``name``, ``kind`` in {reconstruction, attribute}, ``description``)."""
    if attacker.kind not in ("reconstruction", "attribute"):
        raise ValueError(f"attacker '{attacker.name}': kind must be 'reconstruction' or 'attribute'")
    ATTACKERS[attacker.name] = attacker
    return attacker


def get_attackers(names: list[str]) -> list[Any]:
    """The attackers named in ``names`` (in that order), rejecting unknown names with a suggestion."""
    out = []
    for name in names:
        if name not in ATTACKERS:
            hint = difflib.get_close_matches(name, list(ATTACKERS), n=1)
            raise ValueError(f"unknown attacker '{name}' (known: {', '.join(ATTACKERS)})"
                             + (f"; did you mean '{hint[0]}'?" if hint else ""))
        if ATTACKERS[name] not in out:
            out.append(ATTACKERS[name])
    return out


for _attacker in (
    LearnedReconstruction("mirror", "mirror", "AR: mirror of O (paper Table 1)"),
    LearnedReconstruction("urec1", "urec1", "URec#1: one-level U-Net on the features"),
    LearnedReconstruction("urec2", "urec2", "URec#2: two-level U-Net on the features"),
    LearnedReconstruction("resrec", "resrec", "ResRec: residual blocks on the features"),
    WhiteBoxInversion(),
    AttributeAttack("vgg", "vgg", "C's architecture (VGG16 blocks 3-5 + FCs)"),
    AttributeAttack("resnet", "resnet", "small ResNet head"),
    AttributeAttack("linear", "linear", "linear probe on globally pooled features"),
):
    register_attacker(_attacker)
