"""Decode-once image cache: every image resized once into a memory-mapped uint8 array.

The cache key hashes the dataset's file list (with sizes and modification times), the target
size and the resize policy, so a changed dataset or size never reuses a stale array.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..utils import atomic_write_json, default_cache_dir
from .index import DataError, DatasetIndex

CACHE_VERSION = 1


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode ``path`` as RGB, centre-crop to the target aspect ratio, resize to ``size`` (H, W)."""
    height, width = size
    try:
        with Image.open(path) as img:
            img.draft("RGB", (width * 2, height * 2))
            img = img.convert("RGB")
            img.load()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image (corrupt or not an image): {exc}") from exc
    src_w, src_h = img.size
    target_ratio = width / height
    if abs(src_w / src_h - target_ratio) > 1e-3:
        if src_w / src_h > target_ratio:  # too wide: crop the sides
            new_w = round(src_h * target_ratio)
            left = (src_w - new_w) // 2
            img = img.crop((left, 0, left + new_w, src_h))
        else:  # too tall: crop top and bottom
            new_h = round(src_w / target_ratio)
            top = (src_h - new_h) // 2
            img = img.crop((0, top, src_w, top + new_h))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


def cache_key(index: DatasetIndex, size: tuple[int, int]) -> str:
    """Hash of files (path, byte size, mtime), target size and cache format version."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|{index.name}|{index.root}|{size[0]}x{size[1]}|center-crop".encode())
    for path in index.files:
        st = path.stat()
        h.update(f"{path.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def cached_images(
    index: DatasetIndex,
    size: tuple[int, int],
    cache_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """All images of ``index`` as a read-only ``uint8 [N, H, W, 3]`` memmap, building it once."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(index, size)
    target = cache_dir / f"{index.name}-{size[0]}x{size[1]}-{key}.npy"
    if target.is_file():
        arr = np.load(target, mmap_mode="r")
        if arr.shape == (len(index), size[0], size[1], 3):
            return arr
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(index), size[0], size[1], 3))
    try:
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            jobs = pool.map(lambda p: load_image(p, size), index.files)
            bar = tqdm(jobs, total=len(index), desc=f"caching {index.name} {size[0]}x{size[1]}",
                       disable=not progress, unit="img")
            for i, img in enumerate(bar):
                out[i] = img
        out.flush()
        del out
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    atomic_write_json(
        target.with_suffix(".json"),
        {"dataset": index.name, "root": str(index.root), "size": list(size), "count": len(index),
         "fingerprint": index.fingerprint(), "version": CACHE_VERSION},
    )
    return np.load(target, mmap_mode="r")


def describe_cache(path: Path) -> dict:
    """The metadata written beside a cache array."""
    return json.loads(Path(path).with_suffix(".json").read_text())
