"""LFW loader: the shared deep-funneled set with gender lists, Kumar attribute files, layouts, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.data import DataError, load_index
from deepobfuscator.data.lfw import load_lfw, normalise_name

CONFLICTS = {"Allison_Searing_0001.jpg", "Claudia_Coslovich_0001.jpg", "Elizabeth_Hill_0001.jpg",
             "Erika_Reyes_0001.jpg", "Tatiana_Shchegoleva_0001.jpg"}
UNLISTED = {"Robert_Evans_0001.jpg", "Robert_Evans_0002.jpg", "Yasser_Arafat_0005.jpg"}


@pytest.fixture(scope="module")
def lfw(shared_data: Path):
    return load_index("lfw", shared_data / "lfw")


@pytest.mark.shared
def test_shared_lfw_gender_labels_and_reported_conflicts(lfw) -> None:
    names = [f.name for f in lfw.files]
    assert len(lfw) == 13233 - len(CONFLICTS) - len(UNLISTED)
    assert not (set(names) & (CONFLICTS | UNLISTED))
    assert list(lfw.specs) == ["Male"] and lfw.specs["Male"].binary
    male = dict(zip(names, lfw.labels["Male"].tolist()))
    assert male["Aaron_Eckhart_0001.jpg"] == 1 and male["Serena_Williams_0001.jpg"] == 0 and male["AJ_Cook_0001.jpg"] == 0
    assert int(lfw.labels["Male"].sum()) == 10268 - 5  # the five in both lists are left out
    text = "\n".join(lfw.notes)
    assert "both list 5 image(s)" in text and all(n in text for n in CONFLICTS)
    assert "3 image(s) in neither" in text and all(n in text for n in UNLISTED)
    assert "Robert_Evans_0003.jpg" in names  # only the unlisted images of a person go


@pytest.mark.shared
def test_shared_lfw_identities_follow_person_folders(lfw) -> None:
    people = np.asarray([f.parent.name for f in lfw.files])
    ids = lfw.identities
    assert len(set(ids.tolist())) == len(set(people.tolist()))
    bush = ids[people == "George_W_Bush"]
    assert len(bush) == 530 and len(set(bush.tolist())) == 1
    assert ids[people == "Aaron_Eckhart"][0] != bush[0]
    assert lfw.files[0].parent.parent.name == "lfw-deepfunneled" and lfw.partition is None


@pytest.mark.shared
def test_shared_lfw_max_images_and_training_steps(shared_data: Path, tmp_path: Path) -> None:
    from deepobfuscator.config import preset
    from deepobfuscator.methods import train_run

    small = load_lfw(shared_data / "lfw", max_images=20)
    assert len(small) == 20 and small.files[0].name == "AJ_Cook_0001.jpg"
    cfg = preset("tiny")
    cfg.data.dataset, cfg.data.root = "lfw", str(shared_data / "lfw")
    cfg.data.task, cfg.data.private, cfg.data.max_images = ["Male"], [], 64
    cfg.train.epochs_attacker = 0
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert 0.0 <= summary["test"]["C_acc"]["Male"] <= 1.0


# ----------------------------------------------------------------- test-made layouts
def make_tree(base: Path, people: dict[str, int]) -> Path:
    for person, count in people.items():
        (base / person).mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            Image.new("RGB", (10, 10), (i * 20, 50, 90)).save(base / person / f"{person}_{i:04d}.jpg")
    return base


ATTR_HEADER = "# LFW attributes\n#\tperson\timagenum\tMale\tBlack Hair\t5 o' Clock Shadow\n"


def test_attributes_file_binarised_by_sign_with_celeba_names(tmp_path: Path) -> None:
    make_tree(tmp_path / "lfw", {"Ann_Lee": 2, "Bo_Wu": 1, "Cy_Ng": 1})
    rows = ["Ann Lee\t1\t-1.5\t0.3\t-0.2", "Ann Lee\t2\t-0.9\t-0.1\t-0.5", "Bo Wu\t1\t2.0\t1.2\t0.7",
            "Bo Wu\t1\t2.1\t1.0\t0.9", "Zed Qi\t1\t1\t1\t1", "Cy Ng\t1\t1\t1\t1", "Cy Ng\t1\t-1\t1\t1"]
    (tmp_path / "lfw_attributes.txt").write_text(ATTR_HEADER + "\n".join(rows) + "\n")
    (tmp_path / "male_names.txt").write_text("Ann_Lee_0001.jpg\n")  # ignored: the attribute file wins
    index = load_lfw(tmp_path)
    assert [f.name for f in index.files] == ["Ann_Lee_0001.jpg", "Ann_Lee_0002.jpg", "Bo_Wu_0001.jpg"]
    assert list(index.specs) == ["Male", "Black_Hair", "5_o_Clock_Shadow"]
    assert index.labels["Male"].tolist() == [0, 0, 1] and index.labels["Black_Hair"].tolist() == [1, 0, 1]
    assert index.identities.tolist() == [0, 0, 1]
    text = "\n".join(index.notes)
    assert "listed twice with different values, left out: Cy_Ng_0001.jpg" in text
    assert "1 row(s) name images not in lfw/: Zed_Qi_0001.jpg" in text
    assert "1 image(s) have no row in lfw_attributes.txt, left out: Cy_Ng_0001.jpg" in text


def test_root_holding_person_folders_and_gender_lists(tmp_path: Path) -> None:
    make_tree(tmp_path, {"Ann_Lee": 2, "Bo_Wu": 1})
    (tmp_path / "female_names.txt").write_text("Ann_Lee_0001.jpg\nAnn_Lee_0002.jpg\n\n")
    (tmp_path / "male_names.txt").write_text("Bo_Wu_0001.jpg\nGone_Guy_0001.jpg\n")
    index = load_lfw(tmp_path)
    assert index.labels["Male"].tolist() == [0, 0, 1] and index.root == tmp_path.resolve()
    assert any("1 name(s) not in" in n and "Gone_Guy_0001.jpg" in n for n in index.notes)
    assert normalise_name("Strong Nose-Mouth Lines") == "Strong_Nose_Mouth_Lines"


@pytest.mark.parametrize("files, match", [
    ({}, "no labels found"),
    ({"male_names.txt": "A_B_0001.jpg\n"}, "female_names.txt not found"),
    ({"male_names.txt": "A_B_0001.jpg\n", "female_names.txt": "A_B_0001.jpg extra\n"}, r"female_names\.txt:1: expected one"),
    ({"lfw_attributes.txt": "A B\t1\t0.5\n"}, r"lfw_attributes\.txt:1: table row before"),
    ({"lfw_attributes.txt": "#\tname\tnum\tMale\nA B\t1\t0.5\n"}, r"lfw_attributes\.txt:1: last '#' header"),
    ({"lfw_attributes.txt": ATTR_HEADER + "A B\t1\t0.5\n"}, r"lfw_attributes\.txt:3: expected 5 tab-separated"),
    ({"lfw_attributes.txt": ATTR_HEADER + "A B\t1\t0.5\tx\t1\n"}, r"lfw_attributes\.txt:3: non-numeric"),
    ({"lfw_attributes.txt": "#\tperson\timagenum\tBlack Hair\tBlack-Hair\nA B\t1\t1\t1\n"}, "collide"),
])
def test_bad_label_files_name_file_and_line(tmp_path: Path, files: dict[str, str], match: str) -> None:
    make_tree(tmp_path / "lfw", {"A_B": 1})
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=match):
        load_lfw(tmp_path)


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_lfw(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no LFW image folder"):
        load_lfw(tmp_path / "empty")
    make_tree(tmp_path / "x" / "lfw", {"A_B": 1})
    (tmp_path / "x" / "female_names.txt").write_text("C_D_0001.jpg\n")
    (tmp_path / "x" / "male_names.txt").write_text("")
    with pytest.raises(DataError, match="no image of .* has a label"):
        load_lfw(tmp_path / "x")


# ----------------------------------------------------------------- the official layout, test-made
def test_official_layout_tree_labels_identities_and_training(lfw_tree: Path, tmp_path: Path) -> None:
    from deepobfuscator.config import preset
    from deepobfuscator.methods import train_run

    index = load_index("lfw", lfw_tree)
    assert len(index) == 40 and index.notes == [] and list(index.specs) == ["Male"]
    people = np.asarray([f.parent.name for f in index.files])
    male = dict(zip([f.name for f in index.files], index.labels["Male"].tolist()))
    assert male["Ann_Lee_0001.jpg"] == 0 and male["Bo_Wu_0005.jpg"] == 1
    assert int(index.labels["Male"].sum()) == 25  # Bo, Cy, Ed, Gus, Hal: 5 + 4 + 6 + 5 + 5
    assert len(set(index.identities.tolist())) == 8
    assert all(len(set(index.identities[people == p].tolist())) == 1 for p in set(people.tolist()))
    assert index.files[0].parent.parent.name == "lfw-deepfunneled" and index.partition is None
    assert len(load_lfw(lfw_tree, max_images=12)) == 12

    cfg = preset("tiny")
    cfg.data.dataset, cfg.data.root = "lfw", str(lfw_tree)
    cfg.data.task, cfg.data.private, cfg.data.max_images = ["Male"], [], 40
    cfg.train.epochs_attacker = 0
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert 0.0 <= summary["test"]["C_acc"]["Male"] <= 1.0
