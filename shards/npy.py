"""Raw ``.npy`` bytes codec: ``np.save`` on write, a header parse plus ``np.frombuffer`` on read.

WebDataset's generic decoder goes through ``np.load(io.BytesIO(...))``, which copies and is
several times slower; decoding here is zero-copy over the member's bytes.
"""

from __future__ import annotations

import ast
import io

import numpy as np

_MAGIC = b"\x93NUMPY"


def encode(array: np.ndarray) -> bytes:
    """Serialise an array as ``.npy`` bytes.

    Parameters
    ----------
    array : ndarray, any shape
        Stored with its dtype; C-contiguous order is forced.

    Returns
    -------
    data : bytes
        The complete ``.npy`` file content.
    """
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Parse ``.npy`` bytes into a read-only array viewing ``data`` (no copy).

    Parameters
    ----------
    data : bytes
        The content of a ``.npy`` file (format versions 1-3, no pickled objects).

    Returns
    -------
    array : ndarray
        Shape and dtype from the header.

    Raises
    ------
    ValueError
        If the header is malformed or the payload is shorter or longer than the header says.
    """
    mv = memoryview(data)
    if len(mv) < 10 or bytes(mv[:6]) != _MAGIC:
        raise ValueError("not a .npy member (bad magic bytes)")
    major = mv[6]
    if major == 1:
        hlen = int.from_bytes(mv[8:10], "little")
        start = 10
    elif major in (2, 3):
        if len(mv) < 12:
            raise ValueError("truncated .npy header")
        hlen = int.from_bytes(mv[8:12], "little")
        start = 12
    else:
        raise ValueError(f"unsupported .npy format version {major}")
    if len(mv) < start + hlen:
        raise ValueError("truncated .npy header")
    try:
        header = ast.literal_eval(bytes(mv[start : start + hlen]).decode("latin1"))
        dtype = np.dtype(header["descr"])
        shape = tuple(int(s) for s in header["shape"])
        fortran = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError) as err:
        raise ValueError(f"malformed .npy header: {err}") from None
    if dtype.hasobject:
        raise ValueError(".npy member holds Python objects; only numeric arrays are allowed")
    count = int(np.prod(shape, dtype=np.int64))
    payload = len(mv) - start - hlen
    if payload != count * dtype.itemsize:
        raise ValueError(
            f".npy payload is {payload} bytes but shape {shape} of {dtype} needs "
            f"{count * dtype.itemsize} (truncated or corrupt member)"
        )
    arr = np.frombuffer(mv, dtype=dtype, count=count, offset=start + hlen)
    if fortran:
        return arr.reshape(shape[::-1]).T
    return arr.reshape(shape)
