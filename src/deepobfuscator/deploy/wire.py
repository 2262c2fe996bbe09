"""Feature wire format between the phone (O) and the cloud (C); numpy and the standard library only.

Two request bodies are accepted.

``application/x-deepobf-tensor`` (DOBF), all fields little-endian::

    offset  size    field
    0       4       magic b"DOBF"
    4       1       version, 1
    5       1       dtype code: 1 float32, 2 float16, 3 int8 (per-tensor affine)
    6       1       ndim, 1..8
    7       1       flags, 0 (reserved)
    8       4       scale, float32: int8 > 0 and finite; float dtypes 0
    12      4       zero_point, int32: int8 -128..127; float dtypes 0
    16      4*ndim  dims, uint32 each, >= 1
    ...             prod(dims) * itemsize bytes of C-order data; the body ends exactly there

int8 values mean ``scale * (q - zero_point)``; :func:`quantize_int8` picks scale and zero point from
the tensor's range widened to include 0, so 0.0 (most ReLU features) is exact and the error is at
most ``scale / 2``.

``application/x-npy``: a NumPy ``.npy`` file, format 1.0 or 2.0, float16 or float32. Its header is a
Python literal read by ``numpy.lib.format`` (never a pickle); object, structured and other dtypes
are refused before any data is touched.

Every decoding problem raises :class:`WireError`, which carries the HTTP status and a short code.
"""
from __future__ import annotations

import io
import math
import struct
import tokenize
from dataclasses import dataclass

import numpy as np

MAGIC = b"DOBF"
VERSION = 1
MAX_NDIM = 8
TENSOR_CONTENT_TYPE = "application/x-deepobf-tensor"
NPY_CONTENT_TYPE = "application/x-npy"
CONTENT_TYPES = (TENSOR_CONTENT_TYPE, NPY_CONTENT_TYPE)
TRANSPORTS = ("float32", "float16", "int8", "npy")

_HEADER = struct.Struct("<4sBBBBfi")  # magic, version, dtype, ndim, flags, scale, zero_point
HEADER_SIZE = _HEADER.size  # 16
DTYPE_CODES = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("i1")}
_CODE_OF = {"float32": 1, "float16": 2, "int8": 3}
_NPY_HEADER_LIMIT = 10_000


class WireError(ValueError):
    """A request body that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class WireTensor:
    """A decoded body: float32 values (int8 already dequantised) and how they travelled."""

    array: np.ndarray
    wire_dtype: str
    scale: float = 0.0
    zero_point: int = 0


# ---------------------------------------------------------------------------------------- int8
def quantize_int8(array: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Per-tensor affine int8: ``(q, scale, zero_point)`` with ``array ~= scale * (q - zero_point)``."""
    values = np.asarray(array, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError("cannot quantise features containing NaN or infinity")
    lo = min(float(values.min(initial=0.0)), 0.0)
    hi = max(float(values.max(initial=0.0)), 0.0)
    if hi == lo:
        return np.zeros(values.shape, dtype=np.int8), 1.0, 0
    # a range below float32's resolution (subnormal values) would give scale 0: the smallest normal float32 instead,
    # whose half-step still bounds the error (found by the fuzz test: [1e-45])
    scale = max(float(np.float32((hi - lo) / 255.0)), float(np.finfo(np.float32).tiny))
    zero_point = int(np.clip(round(-128.0 - lo / scale), -128, 127))
    q = np.clip(np.rint(values / scale) + zero_point, -128, 127).astype(np.int8)
    return q, scale, zero_point


def dequantize_int8(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 values of an int8 tensor."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


# ------------------------------------------------------------------------------------ encoding
def encode_tensor(array: np.ndarray, dtype: str = "float32") -> bytes:
    """A DOBF body for ``array`` sent as ``dtype`` (float32, float16 or int8)."""
    if dtype not in _CODE_OF:
        raise ValueError(f"unknown wire dtype {dtype!r} (float32, float16 or int8)")
    values = np.asarray(array)
    if not 1 <= values.ndim <= MAX_NDIM or values.size == 0:
        raise ValueError(f"cannot encode an array of shape {values.shape} (1..{MAX_NDIM} dims, none empty)")
    scale, zero_point = 0.0, 0
    if dtype == "int8":
        data, scale, zero_point = quantize_int8(values)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            data = values.astype(DTYPE_CODES[_CODE_OF[dtype]])
        if not np.isfinite(data).all():
            raise ValueError(f"features are NaN/infinite or exceed the {dtype} range")
    header = _HEADER.pack(MAGIC, VERSION, _CODE_OF[dtype], values.ndim, 0, scale, zero_point)
    dims = struct.pack(f"<{values.ndim}I", *values.shape)
    return header + dims + np.ascontiguousarray(data).tobytes()


def encode_npy(array: np.ndarray) -> bytes:
    """A ``.npy`` body (float32 unless already float16)."""
    values = np.asarray(array)
    if values.dtype != np.float16:
        values = values.astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(values), allow_pickle=False)
    return buf.getvalue()


def encode_features(features: np.ndarray, transport: str = "float32") -> tuple[bytes, str]:
    """``(body, content_type)`` for features sent with ``transport`` (float32, float16, int8 or npy)."""
    if transport == "npy":
        return encode_npy(features), NPY_CONTENT_TYPE
    if transport not in _CODE_OF:
        raise ValueError(f"unknown transport {transport!r} (choose from {', '.join(TRANSPORTS)})")
    return encode_tensor(features, transport), TENSOR_CONTENT_TYPE


# ------------------------------------------------------------------------------------ decoding
def _check_dims(shape: tuple[int, ...], where: str) -> int:
    if not 1 <= len(shape) <= MAX_NDIM:
        raise WireError(400, "bad_header", f"{where}: ndim {len(shape)} outside 1..{MAX_NDIM}")
    if any(d < 1 for d in shape):
        raise WireError(400, "bad_header", f"{where}: every dimension must be >= 1, got {list(shape)}")
    return math.prod(shape)


def _check_length(available: int, expected: int, where: str) -> None:
    if available < expected:
        raise WireError(400, "truncated", f"{where}: body truncated: {available} data bytes, header promises {expected}")
    if available > expected:
        raise WireError(400, "trailing_bytes", f"{where}: {available - expected} bytes after the data the header describes")


def decode_tensor(body: bytes) -> WireTensor:
    """Parse a DOBF body."""
    where = TENSOR_CONTENT_TYPE
    if len(body) < HEADER_SIZE:
        if not MAGIC.startswith(bytes(body[:4])):
            raise WireError(400, "bad_magic", f"{where}: body does not start with {MAGIC!r}")
        raise WireError(400, "truncated", f"{where}: body truncated: {len(body)} bytes, header needs {HEADER_SIZE}")
    magic, version, code, ndim, flags, scale, zero_point = _HEADER.unpack_from(body, 0)
    if magic != MAGIC:
        raise WireError(400, "bad_magic", f"{where}: body does not start with {MAGIC!r}")
    if version != VERSION:
        raise WireError(400, "bad_version", f"{where}: unsupported version {version} (this server reads {VERSION})")
    if code not in DTYPE_CODES:
        raise WireError(422, "bad_dtype", f"{where}: unknown dtype code {code} (1 float32, 2 float16, 3 int8)")
    if flags != 0:
        raise WireError(400, "bad_header", f"{where}: flags byte must be 0, got {flags}")
    if not 1 <= ndim <= MAX_NDIM:
        raise WireError(400, "bad_header", f"{where}: ndim {ndim} outside 1..{MAX_NDIM}")
    dims_end = HEADER_SIZE + 4 * ndim
    if len(body) < dims_end:
        raise WireError(400, "truncated", f"{where}: body truncated inside the {ndim} shape fields")
    shape = struct.unpack_from(f"<{ndim}I", body, HEADER_SIZE)
    count = _check_dims(shape, where)
    dtype = DTYPE_CODES[code]
    if code == 3:
        if not (math.isfinite(scale) and scale > 0):
            raise WireError(400, "bad_header", f"{where}: int8 scale must be finite and > 0, got {scale}")
        if not -128 <= zero_point <= 127:
            raise WireError(400, "bad_header", f"{where}: int8 zero_point must be in -128..127, got {zero_point}")
    elif scale != 0 or zero_point != 0:
        raise WireError(400, "bad_header", f"{where}: scale and zero_point must be 0 for {dtype.name}")
    _check_length(len(body) - dims_end, count * dtype.itemsize, where)
    raw = np.frombuffer(body, dtype=dtype, count=count, offset=dims_end).reshape(shape)
    if code == 3:
        return WireTensor(dequantize_int8(raw, scale, zero_point), "int8", float(scale), int(zero_point))
    return WireTensor(raw.astype(np.float32), dtype.name)


def decode_npy(body: bytes) -> WireTensor:
    """Parse a ``.npy`` body without unpickling anything."""
    where = NPY_CONTENT_TYPE
    buf = io.BytesIO(body)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(buf)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(buf, max_header_size=_NPY_HEADER_LIMIT)
        elif version == (2, 0):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(buf, max_header_size=_NPY_HEADER_LIMIT)
        else:
            raise WireError(400, "bad_header", f"{where}: .npy format {version[0]}.{version[1]} not accepted (1.0 or 2.0)")
    except WireError:
        raise
    # numpy re-tokenises a header that fails literal_eval: a mangled one can also raise tokenize.TokenError
    except (ValueError, SyntaxError, TypeError, OverflowError, MemoryError, RecursionError, EOFError,
            tokenize.TokenError) as exc:
        raise WireError(400, "bad_header", f"{where}: not a readable .npy header: {exc}") from None
    if dtype.hasobject or dtype.kind != "f" or dtype.itemsize not in (2, 4) or dtype.fields or dtype.subdtype:
        raise WireError(422, "bad_dtype", f"{where}: dtype {dtype.str!r} not accepted (float16 or float32 only)")
    count = _check_dims(tuple(int(d) for d in shape), where)
    offset = buf.tell()
    _check_length(len(body) - offset, count * dtype.itemsize, where)
    raw = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    raw = raw.reshape(shape[::-1]).transpose() if fortran_order else raw.reshape(shape)
    return WireTensor(np.array(raw, dtype=np.float32, order="C"), np.dtype(dtype.kind + str(dtype.itemsize)).name)


def media_type(header: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header (parameters dropped)."""
    return (header or "").split(";", 1)[0].strip().lower()


def decode_body(body: bytes, content_type: str | None) -> WireTensor:
    """Decode a request body according to its Content-Type."""
    kind = media_type(content_type)
    if kind == TENSOR_CONTENT_TYPE:
        return decode_tensor(body)
    if kind == NPY_CONTENT_TYPE:
        return decode_npy(body)
    raise WireError(415, "unsupported_media_type",
                    f"Content-Type {content_type!r} not accepted (use {' or '.join(CONTENT_TYPES)})")


def check_features(array: np.ndarray, feature_shape: tuple[int, ...] | list[int], max_batch: int) -> np.ndarray:
    """``[N, C, h, w]`` float32 features from one image ``[C, h, w]`` or a batch; shape and values checked."""
    expected = tuple(int(d) for d in feature_shape)
    if array.shape == expected:
        array = array[None]
    elif array.ndim != len(expected) + 1 or tuple(array.shape[1:]) != expected:
        dims = ", ".join(map(str, expected))
        raise WireError(422, "bad_shape",
                        f"features of shape {list(array.shape)} do not match the model's [{dims}] or [N, {dims}]")
    if array.shape[0] > max_batch:
        raise WireError(422, "batch_too_large", f"batch of {array.shape[0]} exceeds the maximum of {max_batch}")
    if not np.isfinite(array).all():
        raise WireError(422, "non_finite", "features contain NaN or infinity")
    return array
