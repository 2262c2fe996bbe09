"""Every defence by name (the paper's DeepObfuscator, PAN, Encoder, Noisy, DP, Hybrid, NoPeek, Hardened) and the one
path that trains any of them (:func:`train_run`). Importing this package registers the built-in methods."""
from . import deepobfuscator, encoder, hardened, hybrid, noise, nopeek  # noqa: F401  (each registers its methods)
from .pipeline import attach_transforms, load_trained
from .registry import METHODS, Method, configure, get_method, no_adversarial, register_method
from .train import StageCache, method_trainer, resolved_config, train_run

__all__ = [
    "METHODS", "Method", "StageCache", "attach_transforms", "configure", "get_method", "load_trained",
    "method_trainer", "no_adversarial", "register_method", "resolved_config", "train_run",
]
