"""CelebA loader (official layout), its error messages, splits and the decode-once cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.config import DataConfig
from deepobfuscator.data import DataError, cached_images, load_index, make_split, prepare_data
from deepobfuscator.data import cache as cache_mod
from deepobfuscator.data.celeba import load_celeba, read_attributes

ATTRS = ["Male", "Smiling", "Young"]


def make_layout(root: Path, n: int = 8, partition: list[int] | None = None, newline: str = "\r\n",
                size: tuple[int, int] = (22, 18)) -> Path:
    """A tiny CelebA-layout root: ``n`` solid-colour JPEGs, a CRLF attribute file and identities."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        colour = np.array([30 * i % 256, 255 - 20 * i % 256, 128], dtype=np.uint8)
        Image.fromarray(np.broadcast_to(colour, (*size, 3)).copy()).save(images / name, quality=95)
        values = rng.choice([-1, 1], size=len(ATTRS))
        values[0] = 1 if i % 2 else -1  # Male alternates
        rows.append(name + " " + " ".join(f"{v:2d}" for v in values))
    write_attrs(root, [str(n), " ".join(ATTRS)] + rows, newline)
    (root / "identity_CelebA.txt").write_text("".join(f"{i + 1:06d}.jpg {i // 2 + 1}\n" for i in range(n)))
    if partition is not None:
        (root / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(partition)))
    return root


def write_attrs(root: Path, lines: list[str], newline: str = "\r\n") -> Path:
    """Write ``list_attr_celeba.txt`` with the given lines."""
    path = root / "list_attr_celeba.txt"
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


def attr_lines(root: Path) -> list[str]:
    """The attribute file's lines (without line endings)."""
    return (root / "list_attr_celeba.txt").read_text().splitlines()


# ------------------------------------------------------------------ the shared CelebA subset
@pytest.mark.shared
def test_reads_the_shared_celeba(celeba_root: Path) -> None:
    index = load_celeba(celeba_root)
    assert len(index) == 8000 and len(index.specs) == 40
    assert index.files[0].name == "000001.jpg" and index.files[-1].name == "008000.jpg"
    assert all(spec.binary for spec in index.specs.values())
    assert index.partition is None
    assert index.identities is not None and len(index.identities) == 8000
    ids, counts = np.unique(index.identities, return_counts=True)
    assert len(ids) > 1000 and counts.max() > 1  # many people, several images each
    assert index.labels["Male"].mean() == pytest.approx(0.42, abs=0.02)
    assert index.labels["Smiling"].mean() == pytest.approx(0.48, abs=0.02)
    assert set(np.unique(index.labels["Smiling"])) == {0, 1}
    assert len(load_index("celeba", celeba_root, max_images=50)) == 50


def test_unknown_attribute_suggests_close_name(celeba_root: Path) -> None:
    index = load_celeba(celeba_root, max_images=20)
    with pytest.raises(DataError) as err:
        index.select(["Smilling"], "intended")
    msg = str(err.value)
    assert "'Smilling'" in msg and "did you mean" in msg and "Smiling" in msg and "list_attr_celeba.txt" in msg
    cfg = DataConfig(root=str(celeba_root), task=["Smiling"], private=["Smiling"], max_images=20)
    with pytest.raises(DataError, match="both intended and private"):
        prepare_data(cfg, progress=False)


# ------------------------------------------------------------------ bad inputs (tiny tmp layouts)
def test_tiny_layout_reads_with_crlf_and_lf(tmp_path: Path) -> None:
    for newline in ("\r\n", "\n"):
        root = make_layout(tmp_path / repr(newline), newline=newline)
        index = load_celeba(root)
        assert len(index) == 8 and list(index.specs) == ATTRS
        assert index.labels["Male"].tolist() == [0, 1] * 4
        assert index.identities.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]


def test_missing_image_names_file_and_line(tmp_path: Path) -> None:
    root = make_layout(tmp_path / "ds")
    lines = attr_lines(root)
    write_attrs(root, lines[:4] + [""] + lines[4:])  # a blank line must not shift the reported line
    (root / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(DataError) as err:
        load_celeba(root)
    msg = str(err.value)
    assert "list_attr_celeba.txt:7:" in msg and "000004.jpg" in msg and "missing" in msg
    assert len(load_celeba(root, max_images=3)) == 3  # images past max_images are not needed


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg_names_the_file(tmp_path: Path, damage: str) -> None:
    root = make_layout(tmp_path / "ds", size=(64, 48))
    bad = root / "img_align_celeba" / "000003.jpg"
    data = bad.read_bytes()
    bad.write_bytes(b"this is not a jpeg" * 10 if damage == "garbage" else data[: len(data) // 2])
    index = load_celeba(root)
    cache_dir = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        cached_images(index, (16, 16), cache_dir, progress=False, workers=1)
    assert str(bad) in str(err.value) and "cannot decode" in str(err.value)
    assert not list(cache_dir.glob("*.npy")) and not list(cache_dir.glob(".*tmp*"))  # nothing half-written kept


@pytest.mark.parametrize(
    "edit,where,needle",
    [
        (lambda ls: ls[:3] + [ls[3].rsplit(" ", 1)[0]] + ls[4:], ":4:", "expected an image name and 3 values, found 2"),
        (lambda ls: ls[:5] + [ls[5][:-2] + " 2"] + ls[6:], ":6:", "must be -1 or 1, found 2"),
        (lambda ls: ls[:5] + [ls[5][:-2] + " x"] + ls[6:], ":6:", "non-integer attribute value"),
        (lambda ls: ["9"] + ls[1:], ":1:", "header says 9 images but 8 rows follow"),
        (lambda ls: ["eight"] + ls[1:], ":1:", "expected the image count"),
        (lambda ls: ls[:4] + [ls[2]] + ls[5:], ":5:", "000001.jpg already listed on line 3"),
    ],
    ids=["value-count", "value-2", "non-integer", "count-line", "count-not-int", "duplicate"],
)
def test_malformed_attribute_rows(tmp_path: Path, edit, where: str, needle: str) -> None:
    root = make_layout(tmp_path / "ds")
    path = write_attrs(root, edit(attr_lines(root)))
    with pytest.raises(DataError) as err:
        read_attributes(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}{where}"), msg
    assert needle in msg


def test_missing_attribute_file_and_image_folder(tmp_path: Path) -> None:
    root = make_layout(tmp_path / "ds")
    (root / "list_attr_celeba.txt").rename(root / "attrs.bak")
    with pytest.raises(DataError, match="list_attr_celeba.txt: file not found"):
        load_celeba(root)
    (root / "attrs.bak").rename(root / "list_attr_celeba.txt")
    (root / "img_align_celeba").rename(root / "images")
    with pytest.raises(DataError, match="img_align_celeba: image folder not found"):
        load_celeba(root)


# ------------------------------------------------------------------ splits
def test_official_partition_is_honoured(tmp_path: Path) -> None:
    partition = [0, 0, 0, 1, 2, 0, 1, 2]
    root = make_layout(tmp_path / "ds", partition=partition)
    index = load_celeba(root)
    assert index.partition.tolist() == partition
    split = make_split(index, seed=5)
    assert split["source"] == "official"
    assert split["train"] == [0, 1, 2, 5] and split["val"] == [3, 6] and split["test"] == [4, 7]
    assert make_split(index, seed=6)["train"] == split["train"]  # the seed plays no part
    # a head of a full download (all official 'train') still gets usable val/test splits
    head = load_celeba(root, max_images=3)
    fallback = make_split(head, seed=0, fractions=[0.34, 0.33, 0.33])
    assert fallback["source"] == "seeded" and "empty" in fallback["note"]
    assert sorted(fallback["train"] + fallback["val"] + fallback["test"]) == [0, 1, 2]


def test_seeded_split_is_deterministic_and_disjoint(celeba_root: Path) -> None:
    index = load_celeba(celeba_root, max_images=1000)
    a, b, c = make_split(index, 0), make_split(index, 0), make_split(index, 1)
    assert a == b and a["source"] == "seeded"
    assert a["train"] != c["train"]
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert [len(s) for s in sets] == [800, 100, 100]
    assert set().union(*sets) == set(range(1000)) and sum(len(s) for s in sets) == 1000
    with pytest.raises(DataError, match="fractions"):
        make_split(index, 0, [0.5, 0.5, 0.0])


# ------------------------------------------------------------------ cache
def test_cache_decodes_once_and_is_keyed_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_layout(tmp_path / "ds")
    index = load_celeba(root)
    cache_dir = tmp_path / "cache"
    calls: list[tuple[int, int]] = []
    real = cache_mod.load_image

    def counting(path: Path, size: tuple[int, int]) -> np.ndarray:
        calls.append(size)
        return real(path, size)

    monkeypatch.setattr(cache_mod, "load_image", counting)
    first = cached_images(index, (12, 10), cache_dir, progress=False)
    assert first.shape == (8, 12, 10, 3) and first.dtype == np.uint8 and len(calls) == 8
    # the colour of image i survives decoding and resizing
    assert np.abs(first[2].reshape(-1, 3).mean(0) - [60, 215, 128]).max() < 6

    def refuse(path: Path, size: tuple[int, int]) -> np.ndarray:
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_mod, "load_image", refuse)
    second = cached_images(index, (12, 10), cache_dir, progress=False)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another cache
        cached_images(index, (16, 16), cache_dir, progress=False, workers=1)
    monkeypatch.setattr(cache_mod, "load_image", counting)
    assert cached_images(index, (16, 16), cache_dir, progress=False).shape == (8, 16, 16, 3)
    assert len(list(cache_dir.glob("*.npy"))) == 2


def test_load_image_crops_to_aspect_and_resizes(celeba_root: Path) -> None:
    path = celeba_root / "img_align_celeba" / "000001.jpg"
    with Image.open(path) as img:
        assert img.size == (89, 109)
    for size in ((64, 64), (32, 32), (218, 178), (48, 64)):
        arr = cache_mod.load_image(path, size)
        assert arr.shape == (*size, 3) and arr.dtype == np.uint8 and arr.std() > 10
    with pytest.raises(DataError, match="image file not found"):
        cache_mod.load_image(celeba_root / "img_align_celeba" / "none.jpg", (8, 8))


def test_attribute_overrides_read_as_comma_separated_lists() -> None:
    from deepobfuscator.config import apply_overrides, preset

    cfg = apply_overrides(preset("tiny"), ["data.task=Smiling,High_Cheekbones", "data.private=Male", "data.image_size=48"])
    assert cfg.data.task == ["Smiling", "High_Cheekbones"] and cfg.data.private == ["Male"]
    assert cfg.data.image_size == [48, 48]
