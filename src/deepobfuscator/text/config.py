"""Configuration of text runs (paper section 5.2): same conventions as image runs, own sections."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, apply_overrides, config_from_dict, make_preset, read_config_yaml
from ..registry import Registry


@dataclass
class TextDataConfig:
    """Which file(s), which label columns, how text becomes ids."""

    root: str | None = None  # a .tsv file, or a folder with data.tsv or train/dev/test.tsv
    task: list[str] = field(default_factory=lambda: ["mention"])
    private: list[str] = field(default_factory=lambda: ["dialect"])
    lowercase: bool = True
    max_len: int = 40  # tokens kept per tweet
    min_freq: int = 2  # rarer training tokens become <unk>
    max_vocab: int = 20000  # including <pad> and <unk>
    split_seed: int = 0
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    max_examples: int | None = None  # first N examples (per split file) for quick runs


@dataclass
class TextModelConfig:
    """Sizes of paper Table 7 (Embedding-300, LSTM-300; 2 x LSTM-300, FC-150) by default."""

    embedding_dim: int = 300
    hidden: int = 300  # obfuscator LSTM
    classifier_hidden: int = 300  # C, AC and the fresh attacker
    classifier_layers: int = 2
    fc: int = 150
    dropout: float = 0.0
    bow_hidden: int = 300  # bag-of-words reconstruction attacker


@dataclass
class TextPrivacyConfig:
    """Adversarial objective; text has no reconstruction terms."""

    defend: str = "attributes"  # attributes | none
    lambda1: float = 1.0
    attribute_objective: str = "negative_bce"  # negative_bce (paper) | entropy


@dataclass
class TextTrainConfig:
    """Schedule: pretrain O+C, pretrain AC, the cycle, then post-hoc attackers on the final O."""

    seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    lr_attacker: float = 1e-3
    epochs_pretrain: int = 3
    epochs_attacker: int = 2
    epochs_adversarial: int = 4
    epochs_attack: int = 3  # fresh adversary and bag-of-words attacker, trained on the frozen final O
    max_val_examples: int | None = None
    threads: int | None = None
    device: str = "cpu"


@dataclass
class TextRunConfig:
    """Everything that defines a text run."""

    name: str = "text"
    modality: str = "text"
    method: str = "deepobfuscator"
    data: TextDataConfig = field(default_factory=TextDataConfig)
    model: TextModelConfig = field(default_factory=TextModelConfig)
    privacy: TextPrivacyConfig = field(default_factory=TextPrivacyConfig)
    train: TextTrainConfig = field(default_factory=TextTrainConfig)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TextRunConfig":
        """Build from a nested dict, rejecting unknown keys with a suggestion."""
        return config_from_dict(cls, raw)


def _preset_text_paper() -> TextRunConfig:
    cfg = TextRunConfig(name="text-paper")
    cfg.train.epochs_pretrain, cfg.train.epochs_attacker, cfg.train.epochs_adversarial = 5, 3, 10
    cfg.train.device = "auto"
    return cfg


def _preset_text_cpu() -> TextRunConfig:
    cfg = TextRunConfig(name="text-cpu")
    cfg.model = TextModelConfig(embedding_dim=100, hidden=128, classifier_hidden=128, fc=64, bow_hidden=256)
    cfg.data.max_vocab = 10000
    return cfg


def _preset_text_tiny() -> TextRunConfig:
    """Seconds-long, for tests."""
    cfg = TextRunConfig(name="text-tiny")
    cfg.model = TextModelConfig(embedding_dim=16, hidden=16, classifier_hidden=16, fc=8, bow_hidden=32)
    cfg.data.min_freq = 1
    cfg.train.batch_size = 16
    cfg.train.eval_batch_size = 64
    cfg.train.epochs_pretrain = cfg.train.epochs_attacker = cfg.train.epochs_adversarial = cfg.train.epochs_attack = 1
    cfg.train.threads = 1
    return cfg


TEXT_PRESETS: Registry[Callable[[], TextRunConfig]] = Registry("text preset")
TEXT_PRESETS.add("text-paper", _preset_text_paper, "paper Table 7 sizes, GPU")
TEXT_PRESETS.add("text-cpu", _preset_text_cpu, "smaller LSTMs for a CPU")
TEXT_PRESETS.add("text-tiny", _preset_text_tiny)


def text_preset(name: str) -> TextRunConfig:
    """The named text preset as a fresh config."""
    return make_preset(TEXT_PRESETS, name)


def apply_text_overrides(cfg: TextRunConfig, overrides: list[str]) -> TextRunConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML)."""
    return apply_overrides(cfg, overrides)


def load_text_config(path: Path) -> TextRunConfig:
    """Read a text run's ``config.yaml``."""
    raw = read_config_yaml(path)
    if raw.get("modality") != "text":
        raise ConfigError(f"{path}: not a text run (modality is {raw.get('modality', 'image')!r})")
    return TextRunConfig.from_dict(raw)
