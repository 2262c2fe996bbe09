"""Labeled Faces in the Wild in its official layout.

Images: ``root/lfw-deepfunneled/`` (or ``lfw_funneled/``, ``lfw/``, or ``root`` itself) holding
``Person_Name/Person_Name_0001.jpg``. Labels, looked up in ``root`` and then in the image folder:

* ``lfw_attributes.txt`` (Kumar et al., 73 real-valued attributes) when present: ``#`` header lines,
  the last one naming the tab-separated columns ``person, imagenum, <attributes>``; values are
  binarised by sign (> 0 is 1). Names are normalised to CelebA style (``Black Hair`` -> ``Black_Hair``).
* otherwise ``female_names.txt`` and ``male_names.txt`` (one image file name per line), giving
  ``Male`` (1 = male, as in CelebA).

Images with conflicting or missing labels are left out and listed in ``DatasetIndex.notes``;
nothing is guessed. Identity is the person folder (an integer per person, in sorted name order).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .index import AttributeSpec, DataError, DatasetIndex, read_lines

IMAGE_DIRS = ("lfw-deepfunneled", "lfw_funneled", "lfw-funneled", "lfw")
ATTR_FILE = "lfw_attributes.txt"
FEMALE_FILE = "female_names.txt"
MALE_FILE = "male_names.txt"
_SHOW = 10  # example names quoted per note


def normalise_name(name: str) -> str:
    """CelebA-style name: non-alphanumeric runs become ``_`` (``5 o' Clock Shadow`` -> ``5_o_Clock_Shadow``)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def image_name(person: str, number: int) -> str:
    """The LFW file name of image ``number`` of ``person`` (spaces or underscores in the name)."""
    return f"{person.strip().replace(' ', '_')}_{number:04d}.jpg"


def _examples(names: list[str] | set[str]) -> str:
    items = sorted(names)
    return ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")


def find_image_dir(root: Path) -> Path:
    """The folder of person folders under ``root`` (an official LFW archive folder, or ``root`` itself)."""
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    for sub in sorted(p for p in root.iterdir() if p.is_dir())[:50]:
        if any(f.name.startswith(sub.name + "_") and f.suffix.lower() == ".jpg" for f in sub.iterdir()):
            return root
    raise DataError(
        f"{root}: no LFW image folder found (expected one of {', '.join(IMAGE_DIRS)}/ holding "
        f"Person_Name/Person_Name_0001.jpg, or such person folders directly in the root)"
    )


def list_images(image_dir: Path) -> tuple[list[Path], list[str]]:
    """All ``*.jpg`` files of the person folders (sorted) and the person of each."""
    files: list[Path] = []
    people: list[str] = []
    for person in sorted(p for p in image_dir.iterdir() if p.is_dir()):
        for f in sorted(person.iterdir()):
            if f.suffix.lower() == ".jpg" and f.is_file():
                files.append(f)
                people.append(person.name)
    if not files:
        raise DataError(f"{image_dir}: no .jpg images in person folders")
    return files, people


def read_name_list(path: Path) -> list[tuple[int, str]]:
    """(line number, image file name) of a per-image list such as ``male_names.txt``; blank lines skipped."""
    out = []
    for lineno, line in enumerate(read_lines(path), start=1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1 or "/" in name or "\\" in name or not name.lower().endswith(".jpg"):
            raise DataError(f"{path}:{lineno}: expected one image file name like Person_Name_0001.jpg, "
                            f"found {line.strip()[:80]!r}")
        out.append((lineno, name))
    return out


def read_lfw_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Parse ``lfw_attributes.txt`` into (image names, normalised attribute names, {0, 1} matrix, notes).

    An image listed twice with different binarised values is a conflict: it is left out and noted.
    """
    lines = read_lines(path)
    header: tuple[int, list[str]] | None = None
    rows: dict[str, list[int]] = {}
    conflicts: set[str] = set()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            if rows:
                raise DataError(f"{path}:{lineno}: '#' header line after the table started")
            cols = [c.strip() for c in line.lstrip()[1:].split("\t") if c.strip()]
            if cols:
                header = (lineno, cols)
            continue
        if header is None:
            raise DataError(f"{path}:{lineno}: table row before a '#' header line naming the columns")
        head_line, cols = header
        if cols[:2] != ["person", "imagenum"] or len(cols) < 3:
            raise DataError(f"{path}:{head_line}: last '#' header line must name the tab-separated columns "
                            f"'person', 'imagenum', then the attributes; found {cols[:4]}")
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != len(cols):
            raise DataError(f"{path}:{lineno}: expected {len(cols)} tab-separated fields "
                            f"(person, imagenum, {len(cols) - 2} attributes), found {len(parts)}")
        if not parts[0]:
            raise DataError(f"{path}:{lineno}: empty person name")
        try:
            number = int(parts[1])
            values = np.asarray([float(v) for v in parts[2:]])
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: non-numeric imagenum or attribute value ({exc})") from exc
        if number < 1 or not np.all(np.isfinite(values)):
            raise DataError(f"{path}:{lineno}: imagenum must be >= 1 and attribute values finite")
        key = image_name(parts[0], number)
        binary = (values > 0).astype(np.int64).tolist()
        if key in rows and rows[key] != binary:
            conflicts.add(key)
        rows[key] = binary
    if header is None:
        raise DataError(f"{path}: no '#' header line naming the columns")
    cols = header[1]
    names = [normalise_name(c) for c in cols[2:]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}:{header[0]}: attribute names collide after normalisation: {dupes}")
    if not rows:
        raise DataError(f"{path}: no table rows")
    notes = []
    if conflicts:
        notes.append(f"{path.name}: {len(conflicts)} image(s) listed twice with different values, left out: "
                     f"{_examples(conflicts)}")
    keys = [k for k in rows if k not in conflicts]
    matrix = np.asarray([rows[k] for k in keys], dtype=np.int64).reshape(len(keys), len(names))
    return keys, names, matrix, notes


def _label_file(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def gender_labels(female: Path, male: Path) -> tuple[dict[str, int], set[str]]:
    """``Male`` per image name (1 = male) from the two lists, and the names both lists claim."""
    women = {n for _, n in read_name_list(female)}
    men = {n for _, n in read_name_list(male)}
    both = women & men
    labels = {n: 0 for n in women - both}
    labels.update({n: 1 for n in men - both})
    return labels, both


def load_lfw(root: Path, max_images: int | None = None) -> DatasetIndex:
    """Read an LFW root (official layout) into a :class:`DatasetIndex` with ``notes`` on what was left out."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a directory")
    image_dir = find_image_dir(root)
    files, people = list_images(image_dir)
    dirs = [root] + ([image_dir] if image_dir != root else [])
    on_disk = {f.name for f in files}
    notes: list[str] = []
    attr_path = _label_file(dirs, ATTR_FILE)
    if attr_path is not None:
        keys, names, matrix, notes = read_lfw_attributes(attr_path)
        row_of = {k: i for i, k in enumerate(keys)}
        sources = [attr_path]
        unknown = [k for k in keys if k not in on_disk]
        if unknown:
            notes.append(f"{attr_path.name}: {len(unknown)} row(s) name images not in {image_dir.name}/: "
                         f"{_examples(unknown)}")
    else:
        female, male = _label_file(dirs, FEMALE_FILE), _label_file(dirs, MALE_FILE)
        if female is None and male is None:
            raise DataError(f"{root}: no labels found (expected {ATTR_FILE}, or {FEMALE_FILE} and {MALE_FILE}, "
                            f"in {' or '.join(str(d) for d in dirs)})")
        if female is None or male is None:
            missing = FEMALE_FILE if female is None else MALE_FILE
            raise DataError(f"{root}: {missing} not found beside {(male or female)} (both gender lists are needed)")
        gender, both = gender_labels(female, male)
        keys, names = list(gender), ["Male"]
        matrix = np.asarray([[gender[k]] for k in keys], dtype=np.int64).reshape(len(keys), 1)
        row_of = {k: i for i, k in enumerate(keys)}
        sources = [female, male]
        if both:
            notes.append(f"{FEMALE_FILE} and {MALE_FILE} both list {len(both)} image(s), left out: {_examples(both)}")
        unknown = [k for k in keys if k not in on_disk]
        if unknown:
            notes.append(f"{FEMALE_FILE}/{MALE_FILE}: {len(unknown)} name(s) not in {image_dir.name}/: "
                         f"{_examples(unknown)}")
        both_or_labelled = set(keys) | both
        unlabelled = [f.name for f in files if f.name not in both_or_labelled]
        if unlabelled:
            notes.append(f"{len(unlabelled)} image(s) in neither {FEMALE_FILE} nor {MALE_FILE}, left out: "
                         f"{_examples(unlabelled)}")
    if attr_path is not None:
        unlabelled = [f.name for f in files if f.name not in row_of]
        if unlabelled:
            notes.append(f"{len(unlabelled)} image(s) have no row in {attr_path.name}, left out: "
                         f"{_examples(unlabelled)}")
    person_id = {p: i for i, p in enumerate(sorted(set(people)))}
    keep = [i for i, f in enumerate(files) if f.name in row_of]
    if max_images is not None:
        keep = keep[:max_images]
    if not keep:
        raise DataError(f"{root}: no image of {image_dir} has a label in {', '.join(s.name for s in sources)}")
    rows = np.asarray([row_of[files[i].name] for i in keep], dtype=np.int64)
    labels = {n: matrix[rows, j] for j, n in enumerate(names)}
    specs = {n: AttributeSpec(n) for n in names}
    identities = np.asarray([person_id[people[i]] for i in keep], dtype=np.int64)
    return DatasetIndex("lfw", root, [files[i] for i in keep], labels, specs, identities, None, sources,
                        notes=notes)
