"""Pieces of the inspect page that need no run: the feature mosaic, upload checks, data URLs."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.deploy import inspect
from deepobfuscator.deploy.wire import WireError


def test_feature_mosaic_tiles_channels_each_scaled_to_its_range() -> None:
    features = np.stack([np.arange(12, dtype=np.float32).reshape(3, 4) * (c + 1) - c for c in range(5)])
    features[4] = 7.0  # a constant channel shows as black, not as a division by zero
    mosaic, shown = inspect.feature_mosaic(features)
    assert shown == 5 and mosaic.dtype == np.uint8
    assert mosaic.shape == (2 * 3 + 1, 3 * 4 + 2)  # 3 columns x 2 rows with one-pixel gaps
    for c in range(4):
        r, col = divmod(c, 3)
        tile = mosaic[r * 4:r * 4 + 3, col * 5:col * 5 + 4]
        assert tile.min() == 0 and tile.max() == 255 and tile[0, 1] < tile[0, 2]
    assert (mosaic[4:7, 5:9] == 0).all() and (mosaic[3, :] == 255).all()
    _, limited = inspect.feature_mosaic(np.zeros((100, 2, 2), np.float32), limit=64)
    assert limited == 64


def test_check_upload_names_the_problem() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    info = inspect.check_upload(buf.getvalue(), "a.png")
    assert (info.format, info.width, info.height, info.filename) == ("PNG", 40, 30, "a.png")
    cases = [(b"", 400, "empty_body"), (b"%PDF-1.4 a document", 415, "not_an_image"),
             (b"GIF89a-broken header", 415, "not_an_image")]
    for body, status, code in cases:
        with pytest.raises(WireError) as err:
            inspect.check_upload(body, "x")
        assert (err.value.status, err.value.code) == (status, code), body
    bomb = io.BytesIO()
    Image.new("1", (20000, 10000)).save(bomb, format="PNG")  # 200 Mpx in a few KiB
    with pytest.raises(WireError) as err:
        inspect.check_upload(bomb.getvalue(), "bomb.png")
    assert err.value.status == 413 and err.value.code == "image_too_large"


def test_decode_upload_crops_like_training_and_refuses_truncated_files() -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(buf, format="JPEG")
    pixels = inspect.decode_upload(buf.getvalue(), (32, 32))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    with pytest.raises(WireError, match="cannot decode") as err:
        inspect.decode_upload(buf.getvalue()[:400], (32, 32), "cut.jpg")
    assert err.value.status == 400 and "cut.jpg" in err.value.message


def test_png_data_url_round_trips_pixels() -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    url = inspect.png_data_url(pixels)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, pixels)
