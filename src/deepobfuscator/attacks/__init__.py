"""Honest privacy evaluation: attackers trained from scratch on the frozen deployed pipeline's features
(`deepobf attack`)."""
from .base import AttackContext, AttackData, Attacker, AttackSettings, Evaluation
from .features import FeatureSet, Pipeline, extract_features, load_pipeline, obfuscate
from .registry import ATTACKERS, get_attackers, register_attacker
from .sources import AttackSources
from .suite import FITTED_HOOKS, run_attack

__all__ = [
    "ATTACKERS", "AttackContext", "AttackData", "AttackSettings", "AttackSources", "Attacker", "Evaluation",
    "FITTED_HOOKS", "FeatureSet", "Pipeline", "extract_features", "get_attackers", "load_pipeline", "obfuscate",
    "register_attacker", "run_attack",
]
