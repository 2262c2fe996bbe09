"""Experiments: grids of runs (`deepobf sweep`) and searches (`deepobf tune`) as Optuna studies, and the pretraining
cache runs share. Trains through :func:`deepobfuscator.methods.train_run`, then attacks."""
from .cache import PretrainCache, stage_key
from .study import load_study, open_storage, trial_runs
from .sweep import Sweep, load_sweep, parse_sweep, run_sweep

__all__ = ["PretrainCache", "Sweep", "load_sweep", "load_study", "open_storage", "parse_sweep", "run_sweep",
           "stage_key", "trial_runs"]
