"""The main job on a fresh clone: no --data means the embedded synthetic face set."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import deepobfuscator.data as data_mod
from deepobfuscator.cli import main


def test_train_without_data_renders_and_uses_the_synthetic_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "SYNTH_IMAGES", 240)  # the real default is 4000; the code path is the same
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--out", str(out), "--no-progress", "--set", f"data.cache_dir={cache}"])
    assert code == 0
    root = cache / f"synthetic-faces-v{data_mod.SYNTH_VERSION}"
    assert (root / "list_attr_celeba.txt").is_file() and (root / "identity_CelebA.txt").is_file()
    assert len(list((root / "img_align_celeba").glob("*.jpg"))) == 240
    cfg_text = (out / "config.yaml").read_text()
    assert str(root) in cfg_text  # the resolved dataset root is recorded in the run
    summary = json.loads((out / "train_summary.json").read_text())
    assert set(summary["test"]["C_acc"]) == {"Smiling"} and set(summary["test"]["AC_acc"]) == {"Male"}
    assert (out / "checkpoints" / "final.safetensors").is_file()
