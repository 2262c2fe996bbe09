"""Tests for the procedural CelebA-layout face set (deepobfuscator.data.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.data.synth import CELEBA_ATTRIBUTES, render_synthetic_celeba

IDX = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}


def _attrs(root: Path) -> tuple[list[str], np.ndarray]:
    lines = (root / "list_attr_celeba.txt").read_bytes().decode().split("\r\n")[2:-1]
    return [ln.split()[0] for ln in lines], np.array([[int(v) for v in ln.split()[1:]] for ln in lines])


def _images(root: Path, names: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(root / "img_align_celeba" / n).convert("L"), np.float32) for n in names])


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_synthetic_celeba(tmp_path_factory.mktemp("small") / "celeba", 60, 12, size=(54, 44), seed=3)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_synthetic_celeba(tmp_path_factory.mktemp("large") / "celeba", 400, 40, size=(32, 32), seed=1)


def test_attribute_names() -> None:
    assert len(CELEBA_ATTRIBUTES) == 40 == len(set(CELEBA_ATTRIBUTES))
    assert CELEBA_ATTRIBUTES[0] == "5_o_Clock_Shadow" and CELEBA_ATTRIBUTES[20] == "Male"
    assert CELEBA_ATTRIBUTES[31] == "Smiling" and CELEBA_ATTRIBUTES[-1] == "Young"


def test_layout_and_formats(small: Path) -> None:
    names = sorted(p.name for p in (small / "img_align_celeba").iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(1, 61)]
    with Image.open(small / "img_align_celeba" / "000001.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (44, 54)
    raw = (small / "list_attr_celeba.txt").read_bytes().decode()
    assert raw.endswith("\r\n") and raw.count("\n") == raw.count("\r\n") == 62
    lines = raw.split("\r\n")[:-1]
    assert lines[0] == "60"
    assert lines[1] == " ".join(CELEBA_ATTRIBUTES) + " "
    for i, line in enumerate(lines[2:], start=1):
        assert line[:11] == f"{i:06d}.jpg "
        fields = [line[11 + 3 * k: 13 + 3 * k] for k in range(40)]
        assert len(line) == 11 + 3 * 40 - 1 and all(f in ("-1", " 1") for f in fields)
    ident = (small / "identity_CelebA.txt").read_bytes().decode()
    assert "\r" not in ident and ident.endswith("\n")
    id_lines = ident.splitlines()
    assert [ln.split()[0] for ln in id_lines] == names
    assert all(ln.split()[1].isdigit() and int(ln.split()[1]) >= 1 for ln in id_lines)
    readme = (small / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "seed 3" in readme


def test_deterministic(small: Path, tmp_path: Path) -> None:
    again = render_synthetic_celeba(tmp_path / "again", 60, 12, size=(54, 44), seed=3)
    assert (again / "list_attr_celeba.txt").read_bytes() == (small / "list_attr_celeba.txt").read_bytes()
    assert (again / "identity_CelebA.txt").read_bytes() == (small / "identity_CelebA.txt").read_bytes()
    first = [np.asarray(Image.open(r / "img_align_celeba" / "000001.jpg")) for r in (small, again)]
    assert np.array_equal(*first)
    other = render_synthetic_celeba(tmp_path / "other", 60, 12, size=(54, 44), seed=4)
    assert (other / "list_attr_celeba.txt").read_bytes() != (small / "list_attr_celeba.txt").read_bytes()


def test_identities(small: Path) -> None:
    _, values = _attrs(small)
    ids = np.array([int(ln.split()[1]) for ln in (small / "identity_CelebA.txt").read_text().splitlines()])
    assert set(ids) == set(range(1, 13))
    assert np.bincount(ids)[1:].min() >= 2
    for pid in set(ids):
        rows = values[ids == pid]
        for fixed in ("Male", "Young", "Black_Hair", "Big_Nose", "Pale_Skin", "No_Beard"):
            assert len(set(rows[:, IDX[fixed]])) == 1, (pid, fixed)


def test_base_rates_and_correlations(large: Path) -> None:
    _, values = _attrs(large)
    assert set(np.unique(values)) <= {-1, 1}
    pos = values == 1
    rate = dict(zip(CELEBA_ATTRIBUTES, pos.mean(0)))
    bounds = {"Male": (0.3, 0.55), "Smiling": (0.38, 0.58), "Young": (0.6, 0.9), "No_Beard": (0.7, 0.92),
              "Eyeglasses": (0.02, 0.14), "Wearing_Lipstick": (0.35, 0.6), "Attractive": (0.35, 0.65),
              "Black_Hair": (0.12, 0.35), "Blond_Hair": (0.08, 0.25), "Heavy_Makeup": (0.25, 0.5)}
    for name, (lo, hi) in bounds.items():
        assert lo <= rate[name] <= hi, (name, rate[name])
    assert max(rate.values()) < 1.0 and sum(r > 0 for r in rate.values()) >= 36, rate  # rare identity traits may miss
    male = pos[:, IDX["Male"]]
    female_only = ("Goatee", "Mustache", "5_o_Clock_Shadow", "Sideburns", "Bald", "Wearing_Necktie")
    assert not pos[~male][:, [IDX[k] for k in female_only]].any()  # beards, baldness, ties: men only
    assert pos[~male, IDX["No_Beard"]].all()
    smile = pos[:, IDX["Smiling"]]
    assert smile[~male].mean() > smile[male].mean()  # the privacy leak the project studies
    assert pos[smile, IDX["High_Cheekbones"]].mean() > pos[~smile, IDX["High_Cheekbones"]].mean() + 0.3
    assert pos[~male, IDX["Heavy_Makeup"]].mean() > 0.4 > pos[male, IDX["Heavy_Makeup"]].mean()
    hair = pos[:, [IDX[k] for k in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]]
    assert hair.sum(1).max() == 1


def _centroid_accuracy(images: np.ndarray, label: np.ndarray) -> float:
    """Held-out accuracy of a nearest-class-centroid rule on per-image standardised pixels."""
    x = images.reshape(len(images), -1)
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    train, test = np.arange(len(x)) % 2 == 0, np.arange(len(x)) % 2 == 1
    c1, c0 = x[train & label].mean(0), x[train & ~label].mean(0)
    pred = ((x[test] - c1) ** 2).sum(1) < ((x[test] - c0) ** 2).sum(1)
    return float((pred == label[test]).mean())


def test_attributes_are_visible(large: Path) -> None:
    names, values = _attrs(large)
    images = _images(large, names)
    h, w = images.shape[1:]
    mouth = images[:, int(0.55 * h): int(0.75 * h), int(0.3 * w): int(0.7 * w)]
    smile, male = values[:, IDX["Smiling"]] == 1, values[:, IDX["Male"]] == 1
    skin = np.median(images[:, int(0.3 * h): int(0.5 * h), int(0.35 * w): int(0.65 * w)], axis=(1, 2))
    teeth = images[:, int(0.55 * h): int(0.72 * h), int(0.38 * w): int(0.62 * w)].max(axis=(1, 2)) - skin
    effect = (teeth[smile].mean() - teeth[~smile].mean()) / np.sqrt((teeth[smile].var() + teeth[~smile].var()) / 2)
    assert effect > 0.4, effect  # smiles are wider and show teeth
    assert _centroid_accuracy(mouth, smile) > 0.62
    assert _centroid_accuracy(images, male) > 0.6
    assert _centroid_accuracy(images, np.random.default_rng(0).random(len(images)) < 0.5) < 0.6  # control
