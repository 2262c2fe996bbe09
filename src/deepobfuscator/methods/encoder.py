"""**Encoder**: O+C trained on L(C) only, no privacy term; the no-defence reference."""
from __future__ import annotations

from .registry import Method, no_adversarial, register_method

ENCODER = register_method(Method(
    "encoder", "Encoder", "O+C trained on L(C) only (no privacy): the no-defence reference",
    configure=no_adversarial))
