"""Typed run configuration, presets and `key=value` overrides.

A :class:`RunConfig` is the single resolved description of a run; it is written to the run
directory as ``config.yaml`` and read back by every later command.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from .registry import Registry, UnknownNameError
from .utils import atomic_write_text

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration value or override is invalid."""


PAPER_CLASSIFIER = "vgg"  # C when neither the method nor the user names one: the rest of VGG16 (the paper's C)


@dataclass
class DataConfig:
    """Which dataset, which attributes, which images, at which size."""

    dataset: str = "celeba"
    root: str | None = None  # None: the embedded synthetic face set
    task: list[str] = field(default_factory=lambda: ["Smiling"])
    private: list[str] = field(default_factory=lambda: ["Male"])
    image_size: list[int] = field(default_factory=lambda: [64, 64])  # [height, width]
    split_seed: int = 0
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_by: str = "image"  # image | identity: no person/driver on two sides (utility as a new user meets it)
    max_images: int | None = None  # use only the first N images of the dataset (for quick runs)
    cache_dir: str | None = None  # None: $DEEPOBF_CACHE or ~/.cache/deepobfuscator

    def __post_init__(self) -> None:
        # `--set data.task=Smiling` parses as a string, not a list: read it as comma-separated names
        for name in ("task", "private"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [v.strip() for v in value.split(",") if v.strip()])
            elif value is None:
                setattr(self, name, [])
        if isinstance(self.image_size, int):
            self.image_size = [self.image_size, self.image_size]


@dataclass
class ModelConfig:
    """Architectures of the four modules."""

    width: float = 0.25  # channel multiplier of the VGG16 family (1.0 = paper)
    fc_width: int | None = None  # None: 4096 * width
    batch_norm: bool = True
    dropout: float = 0.5
    # C's registry name: vgg (the paper's C) or another registered classifier, e.g. linear (a linear map of the sent
    # map averaged over positions: with a code head, whose sent map is k values repeated over every position plus
    # noise drawn per position, that average is the code's sufficient statistic and C only has to decode it).
    # None: the method's default, else vgg (hardened: auto, chosen with its code head: linear, started as the exact
    # decoder of the code, behind a code head of C's architecture; vgg otherwise)
    classifier: str | None = None
    adversary_classifier: str = "vgg"  # registry name; "vgg" = same as C
    reconstructor: str = "mirror"
    # noisy bottleneck after O (models/bottleneck.py); 0 channels: none (every method but `hardened`); -1: chosen from
    # the intended attributes when the run is created (models.bottleneck.auto_channels; hardened's default)
    bottleneck_channels: int = 0
    bottleneck_pool: int | None = None  # average-pooling factor of the sent map (None: the method's default, else 1)
    bottleneck_norm: str = "batchnorm"  # batchnorm (no affine) | tanh | none
    bottleneck_sigma: float | None = None  # std of the Gaussian noise added on every call, train and deployment
    # (None: the method's default, else 0)
    bottleneck_learn_sigma: bool = False  # learn sigma per channel (VIB KL weight: method.beta)
    # > 0: the sent mean is a code of bottleneck_channels values per image (a head with this many local channels and
    # an MLP), repeated over the sent map: no spatial capacity left for what the intended labels do not need
    # (None: the method's default, else 0; hardened: 16)
    bottleneck_code: int | None = None
    # 3x3 conv layers (C's first block's width, no pooling) in the code head before its 1x1 conv: depth on the phone for
    # intended labels a shallow head cannot compute (0: none; runs written before have no key and load as 0)
    bottleneck_code_depth: int = 0
    # the code head: mlp (the small head above) | vgg (C's architecture on O's features, k outputs: the phone computes
    # what a multi-class intended label needs) | auto (chosen from the intended attributes when the run is created:
    # models.bottleneck.auto_code_head; hardened's default). None: the method's default, else mlp (runs written before
    # the setting have no key and load as mlp)
    bottleneck_code_head: str | None = None
    # classes per intended attribute (e.g. [10]) when the deployed phone sends C's prediction instead of its code: C's
    # linear read-out of the code picks a class combination and the phone sends that combination's centroid of training
    # codes (plus the noise); training keeps the code. None: the method's rule (hardened: on behind a code head of C's
    # architecture with a linear C, methods.hardened.auto_prediction, applied when the run is created), else off;
    # []: off (runs written before the setting have no key and load with the code sent)
    bottleneck_prediction: list[int] | None = None

    def classifier_name(self) -> str:
        """C's registry name: ``classifier``, or the paper's C when no method chose one."""
        return self.classifier or PAPER_CLASSIFIER


@dataclass
class MSSSIMConfig:
    """MS-SSIM settings; ``auto`` picks window and scales that fit the image size."""

    win_size: int | None = None
    levels: int | None = None
    win_sigma: float = 1.5
    data_range: float = 1.0
    k1: float = 0.01
    k2: float = 0.03
    weights: list[float] | None = None
    loss_mapping: str = "shifted"  # how SSIM terms in [-1, 1] are made positive inside the loss


@dataclass
class PrivacyConfig:
    """The adversarial objective (paper section 3.4)."""

    defend: str = "both"  # both | reconstruction | attributes | none
    lambda1: float = 1.0  # weight of -L(AC)
    lambda2: float = 1.0  # weight of L(AR2) - L(AR1)
    attribute_objective: str = "negative_bce"  # negative_bce (paper) | entropy
    reconstruction_loss: str = "msssim"  # msssim (paper) | mse (PAN)
    noise_seed: int = 1234
    noise_std: float = 0.25  # std of the fixed Gaussian noise image around 0.5, in [0, 1] units
    attacker_steps: int = 1  # attacker batches (phase 2) per cycle; >1 lets AR/AC keep up with O


@dataclass
class TrainConfig:
    """Optimisation schedule (Algorithm 1)."""

    seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    lr_attacker: float = 1e-3
    weight_decay: float = 0.0
    epochs_pretrain: int = 3
    epochs_attacker: int = 2
    epochs_adversarial: int = 4
    # a step decay: the last N stage-1 epochs train O and C at lr * lr_drop_factor (0: the rate stays constant), e.g.
    # for a reference trained on the schedule a defence fine-tunes on (benchmarks/results/statefarm_cpu.md)
    lr_drop_epochs: int = 0
    lr_drop_factor: float = 0.1
    checkpoint_every: int = 50  # steps; a checkpoint is also written at every epoch end
    max_val_images: int | None = None
    threads: int | None = None
    device: str = "cpu"
    amp: str = "none"  # none | bf16 | auto (bf16 where the device has it natively): autocast of module forwards
    # (losses stay float32); config.yaml records the resolved value
    channels_last: bool | str = "auto"  # NHWC convolutions; auto: on a CPU for narrow models (width <= 0.5, where
    # oneDNN's NHWC kernels were 1.2x faster), off elsewhere (benchmarks/results/input_layout.md); recorded resolved


@dataclass
class RunConfig:
    """Everything that defines a run."""

    name: str = "run"
    method: str = "hardened"  # the paper's Algorithm 1 is `deepobfuscator` (deepobf train --paper); see docs/hardened.md
    params: dict[str, Any] = field(default_factory=dict)  # the method's parameters (config.yaml: beside its name)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    msssim: MSSSIMConfig = field(default_factory=MSSSIMConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe); the method and its parameters form one mapping,
        ``method: {name: hardened, mu: 1.0, ...}``."""
        raw = dataclasses.asdict(self)
        raw["method"] = {"name": raw["method"], **raw.pop("params")}
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        """Build from a nested dict, rejecting unknown keys with a suggestion. ``method`` is a name or a mapping with
        ``name`` and the parameters; a ``baseline:`` section (runs written before the parameters moved under
        ``method:``) is read as the parameters."""
        if not isinstance(raw, dict):
            raise ConfigError(f"config: expected a mapping, got {type(raw).__name__}")
        raw = dict(raw)
        method = raw.get("method", RunConfig.method)
        params: dict[str, Any] = {}
        if isinstance(method, dict):
            params = dict(method)
            if "name" not in params:
                raise ConfigError("config method: a mapping needs the method's 'name' (e.g. name: hardened)")
            method = params.pop("name")
        legacy = raw.pop("baseline", None)
        if legacy is not None and not isinstance(legacy, dict):
            raise ConfigError(f"config baseline: expected a mapping of method parameters, got {legacy!r}")
        raw["method"], raw["params"] = method, {**(legacy or {}), **params, **(raw.get("params") or {})}
        return config_from_dict(cls, raw)


def config_from_dict(cls: type[C], raw: Any, where: str = "") -> C:
    """Build dataclass ``cls`` from a nested dict; dataclass-typed fields recurse; unknown keys name the field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            raise ConfigError(
                f"unknown config key '{where}{key}'" + (f"; did you mean '{where}{hint[0]}'?" if hint else "")
            )
        section = hints.get(key)
        is_section = isinstance(section, type) and dataclasses.is_dataclass(section)
        kwargs[key] = config_from_dict(section, value, f"{where}{key}.") if is_section else value
    return cls(**kwargs)


def _preset_demo() -> RunConfig:
    """A few minutes on a laptop CPU (about 2 on this project's 2-core machine): 3000 images at 64x64, width 0.125.
    The schedule (4/2/7) trains the paper's method for 13 epochs and every method without an adversarial stage, the
    default `hardened` included, for 12 in stage 1; `hardened` warms O's front for 2 of them (its automatic 4 of 12
    left the bottleneck too few epochs: Smiling 0.84 instead of 0.86 on real faces, the Encoder 0.89 in the same
    time; docs/training.md)."""
    cfg = RunConfig(name="demo")
    cfg.data.image_size = [64, 64]
    cfg.data.max_images = 3000
    cfg.model.width = 0.125
    cfg.train.batch_size = 64
    cfg.train.epochs_pretrain = 4
    cfg.train.epochs_attacker = 2
    cfg.train.epochs_adversarial = 7
    cfg.params = {"warm_epochs": 2}
    return cfg


def _preset_celeba_cpu() -> RunConfig:
    cfg = RunConfig(name="celeba-cpu")
    cfg.data.image_size = [64, 64]
    cfg.model.width = 0.25
    cfg.train.batch_size = 64
    cfg.train.epochs_pretrain = 4
    cfg.train.epochs_attacker = 2
    cfg.train.epochs_adversarial = 6
    return cfg


def _preset_celeba_cpu_hardened() -> RunConfig:
    """celeba-cpu with the `hardened` method at the best configuration measured (benchmarks/hardened_celeba_cpu.py):
    4 Encoder-style warm epochs of O's front, 7 epochs of the 1-channel 8x8 bottleneck with noise std 1, the
    within-class dCor penalty on Male, the within-class image term and the within-class spread term (the last two
    ramped in over 3 epochs, as is the training noise: a cold bottleneck under the full noise sometimes never finds
    Smiling), 1 epoch of the run's diagnostic attackers, no adversarial stage; the method's code head (one value per
    intended binary attribute repeated over the sent map, issue 21) unless model.bottleneck_code says otherwise."""
    cfg = _preset_celeba_cpu()
    cfg.name = "celeba-cpu-hardened"
    cfg.method = "hardened"
    cfg.model.bottleneck_channels = -1  # chosen from the intended attributes: 1 for Smiling (models.bottleneck)
    cfg.model.bottleneck_pool = 2
    cfg.model.bottleneck_norm = "batchnorm"
    cfg.model.bottleneck_sigma = 1.0
    cfg.train.epochs_pretrain = 11
    cfg.train.epochs_attacker = 1
    cfg.train.epochs_adversarial = 0
    cfg.params = {"mu": 1.0, "mu_image": 1.0, "image_ramp_epochs": 3, "mu_spread": 1.0, "spread_ramp_epochs": 3,
                    "sigma_ramp_epochs": 3, "adversaries": [], "warm_epochs": 4, "aux_epochs": 0}
    return cfg


def _preset_celeba_paper() -> RunConfig:
    cfg = RunConfig(name="celeba-paper")
    cfg.data.image_size = [218, 178]
    cfg.model.width = 1.0
    cfg.train.batch_size = 64
    cfg.train.lr = 1e-4
    cfg.train.lr_attacker = 1e-4
    cfg.train.epochs_pretrain = 10
    cfg.train.epochs_attacker = 5
    cfg.train.epochs_adversarial = 20
    cfg.train.checkpoint_every = 500
    cfg.train.device = "auto"
    return cfg


def _preset_tiny() -> RunConfig:
    """A seconds-long configuration for tests."""
    cfg = RunConfig(name="tiny", method="deepobfuscator")  # the tests' preset exercises the paper's three stages
    cfg.data.image_size = [32, 32]
    cfg.data.max_images = 96
    cfg.model.width = 0.0625
    cfg.model.fc_width = 32
    cfg.train.batch_size = 16
    cfg.train.eval_batch_size = 32
    cfg.train.epochs_pretrain = 1
    cfg.train.epochs_attacker = 1
    cfg.train.epochs_adversarial = 1
    cfg.train.checkpoint_every = 2
    cfg.train.threads = 1
    return cfg


def _preset_statefarm_cpu() -> RunConfig:
    """State Farm (pass --data ROOT): 10-way behaviour intended, 26-way driver private, 48x64 (4:3 kept)."""
    cfg = RunConfig(name="statefarm-cpu")
    cfg.data.dataset = "statefarm"
    cfg.data.task = ["behaviour"]
    cfg.data.private = ["driver"]
    cfg.data.image_size = [48, 64]
    cfg.model.width = 0.25
    cfg.train.batch_size = 64
    cfg.train.epochs_pretrain = 6
    cfg.train.epochs_attacker = 3
    cfg.train.epochs_adversarial = 6
    return cfg


PRESETS: Registry[Callable[[], RunConfig]] = Registry("preset")
PRESETS.add("demo", _preset_demo, "a few minutes on a laptop CPU: 3000 images, 64x64, width 0.125")
PRESETS.add("celeba-cpu", _preset_celeba_cpu, "CelebA on a CPU: 64x64, width 0.25")
PRESETS.add("celeba-cpu-hardened", _preset_celeba_cpu_hardened,
            "celeba-cpu with the hardened defence at its best measured setting (docs/hardened.md)")
PRESETS.add("celeba-paper", _preset_celeba_paper, "the paper's setting: 218x178, full VGG16 width, GPU")
PRESETS.add("tiny", _preset_tiny)
PRESETS.add("statefarm-cpu", _preset_statefarm_cpu)


def make_preset(registry: Registry[Callable[[], Any]], name: str) -> Any:
    """A fresh config from the preset ``name`` of ``registry``; unknown names raise ConfigError with a hint."""
    try:
        factory = registry.get(name)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from exc
    return factory()


def preset(name: str) -> RunConfig:
    """The named preset as a fresh config."""
    return make_preset(PRESETS, name)


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Apply ``section.key=value`` overrides (values parsed as YAML); returns a new config of cfg's type.
    ``method=NAME`` switches the method (dropping the previous one's parameters), ``method.KEY=VALUE`` sets one of its
    parameters (``baseline.KEY``, the parameters' former section, is read the same way)."""
    raw = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if "method" in raw and parts[0] in ("method", "baseline"):
            parts[0] = "method"
            if not isinstance(raw["method"], dict):
                raw["method"] = {"name": raw["method"]}
            if parts == ["method"]:
                parsed = yaml.safe_load(value)
                raw["method"] = parsed if isinstance(parsed, dict) else {"name": parsed}
                continue
        node = raw
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"override '{item}': '{part}' is not a config section")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(value)
    return type(cfg).from_dict(raw)


def read_config_yaml(path: Path) -> dict[str, Any]:
    """The mapping stored in a config YAML file (errors name the file)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return raw or {}


def load_config(path: Path) -> RunConfig:
    """Read a ``config.yaml`` written by :func:`save_config`."""
    return RunConfig.from_dict(read_config_yaml(path))


def save_config(cfg: Any, path: Path) -> None:
    """Write a resolved config (image or text) as YAML (atomically)."""
    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
