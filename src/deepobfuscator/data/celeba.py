"""CelebA in its official layout.

``root/img_align_celeba/*.jpg``, ``root/list_attr_celeba.txt`` (count line, 40 names, then
``NNNNNN.jpg`` and 40 values in {-1, 1}), optional ``list_eval_partition.txt`` (``name 0|1|2``)
and optional ``identity_CelebA.txt`` (``name id``). CRLF or LF line endings.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .index import AttributeSpec, DataError, DatasetIndex, read_lines

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"


def _lines(path: Path) -> list[str]:
    return read_lines(path, " (expected the official CelebA layout)")


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` into (image names, attribute names, values in {0, 1})."""
    files, names, matrix, _ = read_attributes_with_lines(path)
    return files, names, matrix


def read_attributes_with_lines(path: Path) -> tuple[list[str], list[str], np.ndarray, list[int]]:
    """As :func:`read_attributes`, plus the 1-based line number of each image's row (for messages)."""
    lines = _lines(path)
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a header line, found {len(lines)} line(s)")
    try:
        count = int(lines[0].strip())
    except ValueError as exc:
        raise DataError(f"{path}:1: expected the image count, found {lines[0][:60]!r}") from exc
    names = lines[1].split()
    if not names:
        raise DataError(f"{path}:2: empty attribute header")
    files: list[str] = []
    rows: list[list[int]] = []
    linenos: list[int] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DataError(
                f"{path}:{lineno}: expected an image name and {len(names)} values, found {len(parts) - 1} value(s)"
            )
        try:
            values = [int(v) for v in parts[1:]]
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: non-integer attribute value in {line.strip()[:80]!r}") from exc
        bad = [v for v in values if v not in (-1, 1)]
        if bad:
            raise DataError(f"{path}:{lineno}: attribute values must be -1 or 1, found {bad[0]}")
        if parts[0] in seen:
            raise DataError(f"{path}:{lineno}: image {parts[0]} already listed on line {seen[parts[0]]}")
        seen[parts[0]] = lineno
        files.append(parts[0])
        rows.append(values)
        linenos.append(lineno)
    if count != len(files):
        raise DataError(f"{path}:1: header says {count} images but {len(files)} rows follow")
    matrix = (np.asarray(rows, dtype=np.int64).reshape(len(files), len(names)) > 0).astype(np.int64)
    return files, names, matrix, linenos


def _read_pairs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected 'image value', found {line.strip()[:80]!r}")
        out[parts[0]] = parts[1]
    return out


def _aligned(path: Path, files: list[str], mapping: dict[str, str], cast: type = int) -> np.ndarray:
    missing = [f for f in files if f not in mapping]
    if missing:
        raise DataError(f"{path}: no entry for {len(missing)} image(s), e.g. {missing[0]}")
    try:
        return np.asarray([cast(mapping[f]) for f in files], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{path}: non-integer value ({exc})") from exc


def load_celeba(root: Path, max_images: int | None = None) -> DatasetIndex:
    """Read a CelebA root (official layout) into a :class:`DatasetIndex`."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a directory")
    attr_path = root / ATTR_FILE
    files, names, matrix, linenos = read_attributes_with_lines(attr_path)
    if max_images is not None:
        files, matrix = files[:max_images], matrix[:max_images]
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found (expected the official CelebA layout)")
    paths = [image_dir / f for f in files]
    for lineno, path in zip(linenos, paths):
        if not path.is_file():
            raise DataError(f"{attr_path}:{lineno}: image {path.name} listed but missing: {path}")
    partition = identities = None
    sources = [attr_path]
    if (root / PARTITION_FILE).is_file():
        partition = _aligned(root / PARTITION_FILE, files, _read_pairs(root / PARTITION_FILE))
        if not set(np.unique(partition)) <= {0, 1, 2}:
            raise DataError(f"{root / PARTITION_FILE}: partition values must be 0, 1 or 2")
        sources.append(root / PARTITION_FILE)
    if (root / IDENTITY_FILE).is_file():
        identities = _aligned(root / IDENTITY_FILE, files, _read_pairs(root / IDENTITY_FILE))
        sources.append(root / IDENTITY_FILE)
    specs = {n: AttributeSpec(n) for n in names}
    labels = {n: matrix[:, i] for i, n in enumerate(names)}
    return DatasetIndex("celeba", root, paths, labels, specs, identities, partition, sources)
