"""Training: the modules of a run, checkpoints, Algorithm 1 (:class:`Trainer`) and opening a run to train it.

Which trainer a run uses is its method's business: :func:`deepobfuscator.methods.train_run` is the one
entry point that trains any method.
"""
from .modules import MODULE_NAMES, Modules, build_modules, feature_shape
from .start import format_summary, init_run, make_trainer, summarize
from .staged import GradSync, Position, StagedTrainer, StopTraining
from .trainer import STAGES, Trainer

__all__ = [
    "MODULE_NAMES", "GradSync", "Modules", "Position", "STAGES", "StagedTrainer", "StopTraining", "Trainer",
    "build_modules", "feature_shape", "format_summary", "init_run", "make_trainer", "summarize",
]
