"""The feature wire format: round trips, every malformed body, no unpickling, and a fuzzed parser."""
from __future__ import annotations

import io
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepobfuscator.deploy import heads, wire
from deepobfuscator.deploy.wire import WireError

SHAPE = (8, 8, 8)


def features(n: int | None = 2, seed: int = 0) -> np.ndarray:
    """ReLU-like features (non-negative, some zeros)."""
    rng = np.random.default_rng(seed)
    shape = SHAPE if n is None else (n, *SHAPE)
    return np.maximum(rng.normal(0.2, 1.0, size=shape), 0).astype(np.float32)


def header(dtype: int = 1, ndim: int = 4, flags: int = 0, scale: float = 0.0, zp: int = 0,
           magic: bytes = wire.MAGIC, version: int = wire.VERSION) -> bytes:
    return struct.pack("<4sBBBBfi", magic, version, dtype, ndim, flags, scale, zp)


def status_of(body: bytes, content_type: str = wire.TENSOR_CONTENT_TYPE) -> tuple[int, str]:
    with pytest.raises(WireError) as info:
        wire.decode_body(body, content_type)
    return info.value.status, info.value.code


@pytest.mark.parametrize("transport", wire.TRANSPORTS)
def test_round_trip_within_the_transport_precision(transport: str) -> None:
    x = features()
    body, ctype = wire.encode_features(x, transport)
    got = wire.decode_body(body, ctype + "; charset=binary")
    assert got.array.dtype == np.float32 and got.array.shape == x.shape and got.array.flags.writeable
    tol = {"float32": 0.0, "npy": 0.0, "float16": 2e-3, "int8": None}[transport]
    if tol is None:
        _, scale, _ = wire.quantize_int8(x)
        tol = scale / 2 + 1e-7
        assert got.array[x == 0].max() == 0.0  # zero is exact in int8
    assert np.abs(got.array - x).max() <= tol * max(1.0, float(np.abs(x).max()))


def test_body_sizes_shrink_with_the_transport() -> None:
    x = features(1)
    sizes = {t: len(wire.encode_features(x, t)[0]) for t in wire.TRANSPORTS}
    assert sizes["float32"] == wire.HEADER_SIZE + 4 * 4 + x.size * 4
    assert sizes["float16"] == wire.HEADER_SIZE + 4 * 4 + x.size * 2
    assert sizes["int8"] == wire.HEADER_SIZE + 4 * 4 + x.size


def test_npy_fortran_order_and_big_endian_are_read_correctly() -> None:
    x = features()
    for arr in (np.asfortranarray(x), x.astype(">f4"), x.astype(np.float16)):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        got = wire.decode_npy(buf.getvalue()).array
        np.testing.assert_allclose(got, x, atol=2e-3 if arr.dtype == np.float16 else 0)


@pytest.mark.parametrize("body,expected", [
    (b"", (400, "truncated")),
    (b"NOPE" + bytes(40), (400, "bad_magic")),
    (b"XY", (400, "bad_magic")),
    (header(version=2) + bytes(16), (400, "bad_version")),
    (header(dtype=7) + bytes(16), (422, "bad_dtype")),
    (header(flags=1) + bytes(16), (400, "bad_header")),
    (header(ndim=0), (400, "bad_header")),
    (header(ndim=9) + bytes(36), (400, "bad_header")),
    (header(ndim=4) + bytes(6), (400, "truncated")),
    (header(ndim=1) + struct.pack("<I", 0), (400, "bad_header")),
    (header(ndim=1) + struct.pack("<I", 4) + bytes(15), (400, "truncated")),
    (header(ndim=1) + struct.pack("<I", 4) + bytes(17), (400, "trailing_bytes")),
    (header(ndim=1, scale=1.0) + struct.pack("<I", 1) + bytes(4), (400, "bad_header")),
    (header(dtype=3, ndim=1, scale=0.0) + struct.pack("<I", 1) + bytes(1), (400, "bad_header")),
    (header(dtype=3, ndim=1, scale=float("nan")) + struct.pack("<I", 1) + bytes(1), (400, "bad_header")),
    (header(dtype=3, ndim=1, scale=1.0, zp=300) + struct.pack("<I", 1) + bytes(1), (400, "bad_header")),
    (header(ndim=8) + struct.pack("<8I", *([2**32 - 1] * 8)) + bytes(64), (400, "truncated")),
])
def test_malformed_dobf_bodies_are_refused(body: bytes, expected: tuple[int, str]) -> None:
    assert status_of(body) == expected


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


class _Exploit:
    """Unpickling this would record that it happened."""

    triggered = False

    def __reduce__(self):
        return (_mark_triggered, ())


def _mark_triggered() -> None:
    _Exploit.triggered = True


def test_npy_never_unpickles_and_refuses_other_dtypes() -> None:
    malicious = npy_bytes(np.array([_Exploit()], dtype=object), allow_pickle=True)
    assert b"_mark_triggered" in malicious  # the payload really is a pickle behind an .npy header
    assert status_of(malicious, wire.NPY_CONTENT_TYPE) == (422, "bad_dtype")
    assert not _Exploit.triggered
    for arr in (features().astype(np.float64), features().astype(np.int8),
                np.zeros(3, dtype=[("a", "<f4"), ("b", "<f4")])):
        assert status_of(npy_bytes(arr), wire.NPY_CONTENT_TYPE) == (422, "bad_dtype")
    good = npy_bytes(features())
    assert status_of(good[:-3], wire.NPY_CONTENT_TYPE) == (400, "truncated")
    assert status_of(good + b"xx", wire.NPY_CONTENT_TYPE) == (400, "trailing_bytes")
    assert status_of(good[:20], wire.NPY_CONTENT_TYPE)[0] == 400
    assert status_of(b"\x93NUMPY\x03\x00" + bytes(20), wire.NPY_CONTENT_TYPE)[0] == 400
    assert status_of(npy_bytes(np.float32(1.0)), wire.NPY_CONTENT_TYPE) == (400, "bad_header")  # 0-d
    assert status_of(npy_bytes(np.zeros((0, 3), np.float32)), wire.NPY_CONTENT_TYPE) == (400, "bad_header")


def test_content_type_must_be_one_of_the_two() -> None:
    body, _ = wire.encode_features(features())
    for ctype in (None, "", "application/json", "application/octet-stream", "image/jpeg"):
        assert status_of(body, ctype)[0] == 415


def test_check_features_accepts_one_image_or_a_batch_only() -> None:
    assert wire.check_features(features(None), SHAPE, 4).shape == (1, *SHAPE)
    assert wire.check_features(features(3), SHAPE, 4).shape == (3, *SHAPE)
    for bad, code in ((features(2)[:, :4], "bad_shape"), (features(2)[None], "bad_shape"),
                      (features(5), "batch_too_large")):
        with pytest.raises(WireError) as info:
            wire.check_features(bad, SHAPE, 4)
        assert (info.value.status, info.value.code) == (422, code)
    for value in (np.nan, np.inf, -np.inf):
        x = features(1)
        x[0, 1, 2, 3] = value
        with pytest.raises(WireError, match="NaN or infinity"):
            wire.check_features(x, SHAPE, 4)


def test_encoders_refuse_values_they_cannot_carry() -> None:
    with pytest.raises(ValueError, match="float16"):
        wire.encode_tensor(np.full(SHAPE, 1e6, np.float32), "float16")
    with pytest.raises(ValueError, match="NaN"):
        wire.encode_tensor(np.full(SHAPE, np.nan, np.float32), "int8")


def test_numpy_heads_match_the_training_losses() -> None:
    import torch

    from deepobfuscator.data import AttributeSpec
    from deepobfuscator.losses import predictions, probabilities
    from deepobfuscator.runs import spec_to_dict

    specs = [AttributeSpec("Smiling"), AttributeSpec("Age", 3, ("young", "mid", "old"))]
    logits = torch.randn(6, 4) * 30
    attrs = [spec_to_dict(s) for s in specs]
    for ours, ref in zip(heads.probabilities(logits.numpy(), attrs), probabilities(logits, specs)):
        np.testing.assert_allclose(ours, ref.numpy(), atol=1e-6)
    np.testing.assert_array_equal(heads.predictions(logits.numpy(), attrs), predictions(logits, specs).numpy())


def test_client_and_wire_import_without_torch() -> None:
    code = ("import sys, deepobfuscator.deploy.client, deepobfuscator.deploy.wire, deepobfuscator.deploy.heads; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------- property tests
@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=96), st.sampled_from(wire.CONTENT_TYPES))
def test_random_bytes_only_ever_raise_wire_errors(body: bytes, ctype: str) -> None:
    try:
        wire.decode_body(body, ctype)
    except WireError as exc:
        assert 400 <= exc.status < 500


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(wire.TRANSPORTS), st.data())
def test_mutated_valid_bodies_decode_or_fail_cleanly(transport: str, data: st.DataObject) -> None:
    body = bytearray(wire.encode_features(features(1, seed=1), transport)[0])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    ctype = wire.NPY_CONTENT_TYPE if transport == "npy" else wire.TENSOR_CONTENT_TYPE
    try:
        got = wire.decode_body(bytes(body[:cut]), ctype)
    except WireError as exc:
        assert exc.status in (400, 422)
    else:
        assert got.array.dtype == np.float32


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
                  elements=st.floats(-1e4, 1e4, width=32)),
       st.sampled_from(wire.TRANSPORTS))
@example(np.array([1e-45], dtype=np.float32), "int8")  # a subnormal range: int8's scale underflowed to 0
def test_any_finite_array_round_trips(x: np.ndarray, transport: str) -> None:
    body, ctype = wire.encode_features(x, transport)
    got = wire.decode_body(body, ctype).array
    assert got.shape == x.shape
    if transport in ("float32", "npy"):
        np.testing.assert_array_equal(got, x)
    elif transport == "float16":
        np.testing.assert_allclose(got, x, rtol=1e-3, atol=1e-4)
    else:
        _, scale, _ = wire.quantize_int8(x)
        assert np.abs(got - x).max() <= scale * 0.5 + 1e-6 * max(1.0, float(np.abs(x).max()))


def test_npy_header_numpy_cannot_tokenise_is_a_clean_400() -> None:
    """Found by the fuzz test above: a NUL byte in the header's shape makes numpy raise tokenize.TokenError."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 8, 8, 8), dtype=np.float32))
    body = buf.getvalue()
    at = body.index(b"(1, 8")
    mangled = body[:at] + b"\x00" + body[at + 1:]
    with pytest.raises(WireError) as info:
        wire.decode_npy(mangled)
    assert info.value.status == 400 and info.value.code == "bad_header"
