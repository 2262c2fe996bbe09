"""Experiments: grids of runs (`deepobf sweep`), the pretraining cache runs share, and job slots that run
several training commands at once. Trains through :func:`deepobfuscator.methods.train_run`, then attacks."""
from .cache import PretrainCache, stage_key
from .slots import gpu_slots, run_commands
from .sweep import Sweep, load_sweep, parse_sweep, run_sweep

__all__ = ["PretrainCache", "Sweep", "gpu_slots", "load_sweep", "parse_sweep", "run_commands", "run_sweep", "stage_key"]
