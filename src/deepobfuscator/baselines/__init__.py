"""Alternative defences (Noisy, DP, Encoder, Hybrid, PAN, NoPeek), the pretrain cache and `deepobf sweep`."""
from .registry import (
    METHODS, Method, apply_pipeline_transforms, attach_run_state, configure, feature_transform, get_method,
    input_transform, register_method, trainer_class,
)
from .train import train_method

__all__ = [
    "METHODS", "Method", "apply_pipeline_transforms", "attach_run_state", "configure", "feature_transform",
    "get_method", "input_transform", "register_method", "trainer_class", "train_method",
]
