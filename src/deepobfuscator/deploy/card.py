"""The model card: what a phone needs to feed O and what the cloud's C serves, with provenance."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..runs import RunDir, run_specs, spec_to_dict

CARD_NAME = "model-card.json"
CARD_VERSION = 1
PREPROCESSING = ("decode as RGB, centre-crop to the H:W aspect ratio, bicubic resize to HxW "
                 "(deepobfuscator.data.cache.load_image), scale to [0, 1] by dividing by 255")


def feature_shape_of(cfg: RunConfig) -> list[int]:
    """O's output shape ``[C, h, w]`` for the run (recorded at training, else recomputed)."""
    if cfg.meta.get("feature_shape"):
        return [int(d) for d in cfg.meta["feature_shape"]]
    from ..training.modules import feature_shape

    return list(feature_shape(cfg))


def file_entry(path: Path, base: Path) -> dict[str, Any]:
    """Name, size and SHA-256 of an exported file."""
    data = Path(path).read_bytes()
    return {"path": str(Path(path).relative_to(base)), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def build_model_card(run: RunDir, cfg: RunConfig | None = None) -> dict[str, Any]:
    """The card's run-derived part: input, features, attributes served and the training run."""
    from .. import __version__
    from ..models.vgg import IMAGENET_MEAN, IMAGENET_STD
    from ..utils import git_commit

    cfg = cfg or run.read_config()
    task_specs, private_specs = run_specs(cfg)
    height, width = (int(d) for d in cfg.data.image_size)
    channels, fh, fw = feature_shape_of(cfg)
    summary = run.read_summary()
    return {
        "card_version": CARD_VERSION,
        "name": cfg.name,
        "method": cfg.method,
        "input": {
            "name": "images", "shape": ["batch", 3, height, width], "dtype": "float32", "layout": "NCHW",
            "channels": "RGB", "range": [0.0, 1.0], "preprocessing": PREPROCESSING,
            "normalisation": {"where": "inside the obfuscator (send plain [0, 1] images)",
                              "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        },
        "features": {
            "name": "features", "shape": ["batch", channels, fh, fw], "dtype": "float32",
            "transport": {"content_types": ["application/x-deepobf-tensor", "application/x-npy"],
                          "dtypes": ["float32", "float16", "int8 (per-tensor affine)"]},
            **({"content": "the training centroid of the class combination C predicts on the phone "
                           "(model.bottleneck_prediction), plus fresh Gaussian noise"}
               if cfg.model.bottleneck_prediction else {}),
        },
        "output": {"name": "logits", "shape": ["batch", sum(s.num_outputs for s in task_specs)],
                   "probabilities": "sigmoid for binary attributes (P(positive)), softmax for multi-class"},
        "attributes": [spec_to_dict(s) for s in task_specs],
        "private_attributes_defended": [s.name for s in private_specs],
        "training_run": {
            "path": str(run.path.resolve()), "name": cfg.name, "commit": cfg.meta.get("commit"),
            "version": cfg.meta.get("version"), "dataset": cfg.data.dataset, "image_size": [height, width],
            "width": cfg.model.width, "defend": cfg.privacy.defend, "split_seed": cfg.data.split_seed,
            "test_metrics": summary.get("test"),
        },
        "created": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
                    "version": __version__},
    }
