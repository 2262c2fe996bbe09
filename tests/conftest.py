"""Shared fixtures: the real CelebA subset in ../shared/data, tiny configs, one tiny trained run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project root (present on developer machines and in CI)."""
    assert SHARED.is_dir(), f"shared test data not found at {SHARED}"
    return SHARED


@pytest.fixture(scope="session")
def celeba_root(shared_data: Path) -> Path:
    """The real CelebA subset (official layout)."""
    return shared_data / "celeba"


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep decoded-image caches of the test session out of the user's home."""
    path = Path(os.environ.get("DEEPOBF_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["DEEPOBF_CACHE"] = str(path)
    return path


@pytest.fixture
def tiny_cfg(celeba_root: Path):
    """The `tiny` preset on the real CelebA subset (96 images, 32x32, seconds to train)."""
    from deepobfuscator.config import preset

    cfg = preset("tiny")
    cfg.data.root = str(celeba_root)
    return cfg


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, celeba_root: Path) -> Path:
    """One tiny DeepObfuscator run trained once per session (Smiling / Male), for downstream commands."""
    from deepobfuscator.config import preset
    from deepobfuscator.methods import train_run

    cfg = preset("tiny")
    cfg.data.root = str(celeba_root)
    cfg.data.max_images = 160
    out = tmp_path_factory.mktemp("runs") / "tiny-run"
    train_run(cfg, out, progress=False)
    return out
