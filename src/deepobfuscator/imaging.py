"""Image decoding shared by training (the cache) and the phone-side client: Pillow + NumPy only.

Kept free of torch so that `deepobfuscator.deploy.client` can import it on a device without the
training stack.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
    """An image file is missing or cannot be decoded (the message names the file)."""


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode ``path`` as RGB, centre-crop to the target aspect ratio, resize to ``size`` (H, W), uint8."""
    height, width = size
    try:
        with Image.open(path) as img:
            img.draft("RGB", (width * 2, height * 2))
            img = img.convert("RGB")
            img.load()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: image file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot decode image (corrupt or not an image): {exc}") from exc
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
