"""State Farm loader: the shared subset, the driver x behaviour stratified split, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.config import preset
from deepobfuscator.data import DataError, load_index, make_split
from deepobfuscator.data.statefarm import CLASSES, load_statefarm


@pytest.fixture(scope="module")
def statefarm(shared_data: Path):
    return load_index("statefarm", shared_data / "statefarm")


@pytest.mark.shared
def test_shared_statefarm_labels(statefarm, shared_data: Path) -> None:
    assert len(statefarm) == 3300 and statefarm.notes == []
    behaviour, driver = statefarm.specs["behaviour"], statefarm.specs["driver"]
    assert behaviour.num_classes == 10 and behaviour.classes == CLASSES and not behaviour.binary
    assert driver.num_classes == 26 and driver.classes[0] == "p002" and driver.classes[-1] == "p081"
    folders = [f.parent.name for f in statefarm.files]
    assert [CLASSES[b] for b in statefarm.labels["behaviour"]] == folders
    assert np.bincount(statefarm.labels["behaviour"]).tolist() == [330] * 10
    rows = (shared_data / "statefarm" / "driver_imgs_list.csv").read_text().splitlines()[1:]
    subject = {r.split(",")[2]: r.split(",")[0] for r in rows}
    assert all(driver.classes[d] == subject[f.name] for f, d in zip(statefarm.files, statefarm.labels["driver"]))
    assert np.array_equal(statefarm.identities, statefarm.labels["driver"])


@pytest.mark.shared
def test_split_is_a_partition_stratified_by_driver_and_behaviour(statefarm) -> None:
    split = make_split(statefarm, 0, [0.8, 0.1, 0.1], stratify=statefarm.stratify)
    parts = [np.asarray(split[k]) for k in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(3300))
    assert [len(p) for p in parts] == [2640, 330, 330]
    for p in parts:
        assert len(set(statefarm.labels["driver"][p].tolist())) == 26
        counts = np.bincount(statefarm.labels["behaviour"][p], minlength=10)
        assert counts.min() >= 0.9 * len(p) / 10 and counts.max() <= 1.1 * len(p) / 10
    # every driver x behaviour group keeps (nearly) its share in train
    strata = statefarm.stratify
    share = np.bincount(strata[parts[0]], minlength=260) / np.maximum(np.bincount(strata, minlength=260), 1)
    present = np.bincount(strata, minlength=260) >= 5
    assert np.all(np.abs(share[present] - 0.8) <= 0.2)
    assert make_split(statefarm, 0, [0.8, 0.1, 0.1], stratify=statefarm.stratify) == split


@pytest.mark.shared
def test_max_images_covers_every_driver_and_behaviour(shared_data: Path) -> None:
    small = load_statefarm(shared_data / "statefarm", max_images=60)
    assert len(small) == 60 and len(set(small.labels["driver"].tolist())) == 26
    assert len(set(small.labels["behaviour"].tolist())) == 10
    assert small.specs["driver"].num_classes == 26  # classes come from the whole csv
    split = make_split(small, 0, [0.8, 0.1, 0.1], stratify=small.stratify)
    assert min(len(split[k]) for k in ("train", "val", "test")) >= 5


def test_statefarm_cpu_preset() -> None:
    cfg = preset("statefarm-cpu")
    assert cfg.data.dataset == "statefarm" and cfg.data.task == ["behaviour"] and cfg.data.private == ["driver"]
    assert cfg.data.image_size == [48, 64] and cfg.model.width == 0.25


# ----------------------------------------------------------------- bad input on test-made trees
HEADER = "subject,classname,img\n"


def make_root(base: Path, rows: list[tuple[str, str, str]], extra: list[str] = ()) -> Path:
    for _, c, img in rows:
        (base / "imgs" / "train" / c).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(base / "imgs" / "train" / c / img)
    for rel in extra:
        (base / "imgs" / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(base / "imgs" / "train" / rel)
    (base / "driver_imgs_list.csv").write_text(HEADER + "".join(f"{s},{c},{i}\n" for s, c, i in rows))
    return base


ROWS = [("p001", "c0", "img_1.jpg"), ("p002", "c1", "img_2.jpg"), ("p001", "c1", "img_3.jpg")]


def test_small_tree_and_unlisted_image_note(tmp_path: Path) -> None:
    index = load_statefarm(make_root(tmp_path, ROWS, extra=["c2/img_9.jpg"]))
    assert index.labels["driver"].tolist() == [0, 1, 0] and index.labels["behaviour"].tolist() == [0, 1, 1]
    assert index.specs["driver"].classes == ("p001", "p002") and index.specs["behaviour"].num_classes == 10
    assert index.notes and "c2/img_9.jpg" in index.notes[0]


@pytest.mark.parametrize("csv_text, match", [
    ("subject,class,img\n", r"driver_imgs_list\.csv:1: expected the header"),
    (HEADER + "p001,c0\n", r"driver_imgs_list\.csv:2: expected three non-empty"),
    (HEADER + "p001,c0,img_1.jpg\np001,c12,img_2.jpg\n", r"driver_imgs_list\.csv:3: unknown class 'c12'"),
    (HEADER + "p001,c0,img_1.jpg\np002,c0,img_404.jpg\n", r"driver_imgs_list\.csv:3: image c0/img_404\.jpg is listed but missing"),
    (HEADER + "p001,c0,img_1.jpg\np002,c0,img_1.jpg\n", r"driver_imgs_list\.csv:3: image img_1\.jpg already listed on line 2"),
    (HEADER + "p001,c0,notes.txt\n", r"driver_imgs_list\.csv:2: 'notes\.txt' is not an image"),
    (HEADER, "no rows after the header"),
    (HEADER + "p001,c0,img_1.jpg\n", "only 1 driver"),
])
def test_bad_csv_names_file_and_line(tmp_path: Path, csv_text: str, match: str) -> None:
    root = make_root(tmp_path, ROWS)
    (root / "driver_imgs_list.csv").write_text(csv_text)
    with pytest.raises(DataError, match=match):
        load_statefarm(root)


def test_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"driver_imgs_list\.csv: file not found"):
        load_statefarm(tmp_path)
    root = make_root(tmp_path / "a", ROWS, extra=["c10/img_5.jpg"])
    with pytest.raises(DataError, match=r"c10: unknown class folder"):
        load_statefarm(root)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "driver_imgs_list.csv").write_text(HEADER + "p001,c0,img_1.jpg\np002,c0,img_2.jpg\n")
    with pytest.raises(DataError, match=r"imgs/train: image folder not found"):
        load_statefarm(tmp_path / "b")


# ----------------------------------------------------------------- the official layout, test-made
def test_official_layout_tree_labels_and_stratified_split(statefarm_tree: Path) -> None:
    index = load_index("statefarm", statefarm_tree)
    assert len(index) == 120 and index.notes == []
    behaviour, driver = index.specs["behaviour"], index.specs["driver"]
    assert behaviour.classes == CLASSES and driver.classes == ("p002", "p012", "p024", "p081")
    assert [CLASSES[b] for b in index.labels["behaviour"]] == [f.parent.name for f in index.files]
    assert np.bincount(index.labels["behaviour"]).tolist() == [12] * 10
    assert np.bincount(index.labels["driver"]).tolist() == [30] * 4
    split = make_split(index, 0, [0.8, 0.1, 0.1], stratify=index.stratify)
    parts = [np.asarray(split[k]) for k in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(120))
    assert all(len(set(index.labels["driver"][p].tolist())) == 4 for p in parts)
    small = load_statefarm(statefarm_tree, max_images=40)
    assert len(small) == 40 and len(set(small.labels["behaviour"].tolist())) == 10
    assert len(set(small.labels["driver"].tolist())) == 4


def test_split_by_driver_puts_no_driver_on_two_sides(statefarm_tree: Path) -> None:
    index = load_statefarm(statefarm_tree)
    split = make_split(index, 3, [0.5, 0.25, 0.25], by="identity")
    parts = {k: np.asarray(split[k]) for k in ("train", "val", "test")}
    drivers = {k: set(index.identities[v].tolist()) for k, v in parts.items()}
    assert all(drivers[a].isdisjoint(drivers[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test")))
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(index)))
    assert split["by"] == "identity" and split["source"] == "seeded by identity"
    assert make_split(index, 3, [0.5, 0.25, 0.25], by="identity") == split  # seeded
    with pytest.raises(DataError, match="split_by"):
        make_split(index, 3, by="driver")


@pytest.mark.shared
def test_shared_statefarm_split_by_driver(statefarm) -> None:
    split = make_split(statefarm, 0, [0.8, 0.1, 0.1], by="identity")
    drivers = {k: set(statefarm.labels["driver"][np.asarray(split[k])].tolist()) for k in ("train", "val", "test")}
    assert drivers["train"].isdisjoint(drivers["test"]) and drivers["val"].isdisjoint(drivers["test"])
    assert abs(len(split["train"]) / 3300 - 0.8) < 0.06  # whole drivers, close to the fractions
