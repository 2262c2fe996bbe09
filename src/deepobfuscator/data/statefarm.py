"""State Farm Distracted Driver Detection in its official layout.

``root/imgs/train/c0 ... c9/img_N.jpg`` and ``root/driver_imgs_list.csv`` (header
``subject,classname,img``). Attributes: ``behaviour`` (10 classes c0-c9, the intended task) and
``driver`` (one class per subject in the csv, the private attribute); both multi-class, so both are
trained with cross-entropy. The seeded split is stratified by driver x behaviour, so every driver
and behaviour appears in train, val and test in proportion, and each image is in exactly one split.
With ``max_images`` the subset is taken round-robin over the driver x behaviour groups.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .index import AttributeSpec, DataError, DatasetIndex

CSV_FILE = "driver_imgs_list.csv"
IMAGE_DIR = Path("imgs") / "train"
COLUMNS = ("subject", "classname", "img")
CLASSES = tuple(f"c{i}" for i in range(10))
CLASS_DESCRIPTIONS = (
    "safe driving", "texting - right", "talking on the phone - right", "texting - left",
    "talking on the phone - left", "operating the radio", "drinking", "reaching behind",
    "hair and makeup", "talking to passenger",
)
_IMG = re.compile(r"^[^/\\\s]+\.jpe?g$", re.IGNORECASE)


def read_driver_list(path: Path) -> list[tuple[int, str, str, str]]:
    """Rows ``(line, subject, classname, img)`` of ``driver_imgs_list.csv``, validated."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found (expected the State Farm layout: {CSV_FILE} beside "
                        f"{IMAGE_DIR}/c0 ... c9)") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from exc
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != list(COLUMNS):
        raise DataError(f"{path}:1: expected the header {','.join(COLUMNS)}, found {','.join(header or [])!r}")
    rows: list[tuple[int, str, str, str]] = []
    seen: dict[str, int] = {}
    for lineno, fields in enumerate(reader, start=2):
        if not fields or not "".join(fields).strip():
            continue
        fields = [f.strip() for f in fields]
        if len(fields) != 3 or not all(fields):
            raise DataError(f"{path}:{lineno}: expected three non-empty fields subject,classname,img, "
                            f"found {','.join(fields)[:80]!r}")
        subject, classname, img = fields
        if classname not in CLASSES:
            raise DataError(f"{path}:{lineno}: unknown class {classname!r} (expected one of c0 ... c9)")
        if not _IMG.match(img):
            raise DataError(f"{path}:{lineno}: {img!r} is not an image file name")
        if img in seen:
            raise DataError(f"{path}:{lineno}: image {img} already listed on line {seen[img]}")
        seen[img] = lineno
        rows.append((lineno, subject, classname, img))
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _round_robin(driver: np.ndarray, behaviour: np.ndarray, count: int) -> list[int]:
    """Positions of the first ``count`` rows when taking one per driver x behaviour group in turn.

    Groups are visited along Latin-square diagonals (``(driver + behaviour) % 10``), so even a small
    subset covers every driver and every behaviour.
    """
    members: dict[tuple[int, int, int], list[int]] = {}
    for pos, (d, b) in enumerate(zip(driver.tolist(), behaviour.tolist())):
        members.setdefault(((d + b) % len(CLASSES), d, b), []).append(pos)
    order = [m[k] for k in range(max(len(m) for m in members.values()))
             for _, m in sorted(members.items()) if k < len(m)]
    return sorted(order[:count])


def load_statefarm(root: Path, max_images: int | None = None) -> DatasetIndex:
    """Read a State Farm root (official layout) into a :class:`DatasetIndex` stratified by driver x class."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a directory")
    csv_path = root / CSV_FILE
    rows = read_driver_list(csv_path)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found (expected the State Farm layout {IMAGE_DIR}/c0 ... c9)")
    for sub in sorted(image_dir.iterdir()):
        if sub.is_dir() and sub.name not in CLASSES:
            raise DataError(f"{sub}: unknown class folder (expected c0 ... c9)")
    listed = {img for _, _, _, img in rows}
    on_disk = {(c, f.name) for c in CLASSES if (image_dir / c).is_dir()
               for f in (image_dir / c).iterdir() if f.is_file()}
    for lineno, _, classname, img in rows:
        if (classname, img) not in on_disk:
            raise DataError(f"{csv_path}:{lineno}: image {classname}/{img} is listed but missing from {image_dir}")
    notes = []
    unlisted = sorted(f"{c}/{n}" for c, n in on_disk if n not in listed and _IMG.match(n))
    if unlisted:
        notes.append(f"{len(unlisted)} image(s) in {IMAGE_DIR}/ have no row in {CSV_FILE} (no driver label), "
                     f"left out: {', '.join(unlisted[:10])}{', ...' if len(unlisted) > 10 else ''}")
    drivers = tuple(sorted({subject for _, subject, _, _ in rows}))
    if len(drivers) < 2:
        raise DataError(f"{csv_path}: only {len(drivers)} driver(s); the private attribute needs at least two")
    driver_id = {d: i for i, d in enumerate(drivers)}
    behaviour = np.asarray([CLASSES.index(c) for _, _, c, _ in rows], dtype=np.int64)
    driver = np.asarray([driver_id[s] for _, s, _, _ in rows], dtype=np.int64)
    strata = driver * len(CLASSES) + behaviour
    keep = np.arange(len(rows)) if max_images is None else np.asarray(
        _round_robin(driver, behaviour, max_images), dtype=np.int64)
    files = [image_dir / rows[i][2] / rows[i][3] for i in keep]
    labels = {"behaviour": behaviour[keep], "driver": driver[keep]}
    specs = {"behaviour": AttributeSpec("behaviour", len(CLASSES), CLASSES),
             "driver": AttributeSpec("driver", len(drivers), drivers)}
    return DatasetIndex("statefarm", root, files, labels, specs, driver[keep], None, [csv_path],
                        notes=notes, stratify=strata[keep])
