"""Honest privacy evaluation: attackers trained from scratch on the frozen obfuscator's features (`deepobf attack`)."""
from .base import ALL_ATTACKERS, AttackContext, AttackSettings
from .features import FeatureSet, extract_features, obfuscate
from .registry import ATTACKERS, get_attackers, register_attacker
from .sources import AttackSources
from .suite import run_attack

__all__ = [
    "ALL_ATTACKERS", "ATTACKERS", "AttackContext", "AttackSettings", "AttackSources", "FeatureSet",
    "extract_features", "get_attackers", "obfuscate", "register_attacker", "run_attack",
]
