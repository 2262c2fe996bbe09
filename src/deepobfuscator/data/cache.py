"""Decode-once image cache: every image resized once into a memory-mapped uint8 array.

The cache key hashes the dataset's file list (with sizes and modification times), the target
size and the resize policy, so a changed dataset or size never reuses a stale array.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from ..progress import progress_bar

from .. import imaging
from ..utils import atomic_write_json, default_cache_dir
from .index import DataError, DatasetIndex

CACHE_VERSION = 1


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode, centre-crop and resize one image (:func:`deepobfuscator.imaging.load_image`); DataError on failure."""
    try:
        return imaging.load_image(path, size)
    except imaging.ImageError as exc:
        raise DataError(str(exc)) from exc


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
            bar = progress_bar(jobs, total=len(index), desc=f"caching {index.name} {size[0]}x{size[1]}",
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
