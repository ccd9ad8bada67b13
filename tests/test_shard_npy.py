"""Raw .npy codec: round trip, zero-copy decode, truncation and garbage detected."""

from __future__ import annotations

import numpy as np
import pytest
from brainxl.shards import npy


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_round_trip_matches_np_load(dtype) -> None:
    a = (np.arange(24).reshape(2, 3, 4) * 1.5).astype(dtype)
    data = npy.encode(a)
    b = npy.decode(bytearray(data))
    np.testing.assert_array_equal(a, b)
    assert b.dtype == a.dtype and b.flags.writeable
    f = np.asfortranarray(a)
    np.testing.assert_array_equal(npy.decode(npy.encode(f)), a)
    empty = npy.decode(npy.encode(np.zeros((0, 7), dtype=np.float32)))
    assert empty.shape == (0, 7)


def test_decode_is_zero_copy() -> None:
    buf = bytearray(npy.encode(np.zeros(4, dtype=np.float32)))
    arr = npy.decode(buf)
    buf[-4:] = np.float32(3.0).tobytes()
    assert arr[-1] == 3.0


def test_truncated_and_garbage_members_raise() -> None:
    data = npy.encode(np.ones((3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="payload is 56 bytes but shape"):
        npy.decode(data[:-4])
    with pytest.raises(ValueError, match="bad magic"):
        npy.decode(b"hello world, not an array")
    with pytest.raises(ValueError, match="truncated .npy header"):
        npy.decode(data[:20])
    with pytest.raises(ValueError, match="Python objects"):
        npy.decode(_object_npy())


def _object_npy() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()
