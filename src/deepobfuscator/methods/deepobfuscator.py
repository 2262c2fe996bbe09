"""The paper's DeepObfuscator (Algorithm 1, plain :class:`~deepobfuscator.training.Trainer`) and PAN
(the same cycle with pixel-MSE reconstruction terms, paper section 5.3)."""
from __future__ import annotations

from ..config import RunConfig
from .registry import Method, register_method


def _pan(cfg: RunConfig) -> None:
    cfg.privacy.reconstruction_loss = "mse"


DEEPOBFUSCATOR = register_method(Method(
    "deepobfuscator", "DeepObfuscator", "Algorithm 1: adversarial training against reconstruction and attributes",
    uses_lambda=True, tunable_config={"privacy.lambda1": {"type": "float", "low": 0.1, "high": 20.0, "log": True}}))
PAN = register_method(Method(
    "pan", "PAN", "Algorithm 1 with pixel-MSE reconstruction terms (paper section 5.3)",
    configure=_pan, uses_lambda=True,
    tunable_config={"privacy.lambda1": {"type": "float", "low": 0.1, "high": 20.0, "log": True}}))
