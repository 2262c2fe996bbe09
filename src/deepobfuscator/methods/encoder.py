"""**Encoder**: O+C trained on L(C) only, no privacy term; the no-defence reference.

It deploys stage 1's best validation epoch by default (``method.deploy: best_val``; ``last`` keeps the last epoch's
weights as runs before it did): the reference every defence is compared with must not be one unlucky last epoch.
"""
from __future__ import annotations

from typing import Literal

from ..training.selection import ValidationChoiceTrainer
from .params import MethodParams, param
from .registry import Method, no_adversarial, register_method


class EncoderParams(MethodParams):
    """The Encoder's parameters."""

    deploy: Literal["best_val", "last"] = param(
        "best_val", "which stage-1 epoch's O and C are deployed: the best mean validation accuracy of the intended "
        "attributes (ties: the earlier) or the last")


ENCODER = register_method(Method(
    "encoder", "Encoder", "O+C trained on L(C) only (no privacy): the no-defence reference",
    params=EncoderParams, configure=no_adversarial, trainer_cls=ValidationChoiceTrainer))
