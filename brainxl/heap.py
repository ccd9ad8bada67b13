"""The process's glibc malloc policy for large tensors: keep freed memory, or give it back.

glibc serves blocks above its mmap threshold with ``mmap`` and returns them to the OS on
free; the threshold rises dynamically to the size of freed mmapped blocks, up to 32 MiB.
Tensors above that (a masked-modeling step's 8192-code logits are 134 MB at batch 16) are
then mapped afresh on every step and every page faults in again: on this machine's CPUs
the faults cost more than the arithmetic (a 4096 x 8192 cross-entropy forward and
backward: 387 ms with the defaults, 129 ms with freed memory kept). Two policies:

- :func:`keep_freed_memory` for training without parameter partitioning: freed blocks
  stay in the heap and are reused by the next step (the 256-token LaBraM-base step:
  ~200k page faults per step become a handful, for 5 % more peak resident memory, as
  aligned blocks fragment the heap a little).
- :func:`return_freed_memory` for ZeRO-3, whose point is memory: blocks of 1 MiB and more
  are mapped and given back, so weights freed after partitioning really leave the process.

The first policy never overrides the second within a process. Both return False where the
C library has no ``mallopt`` (not glibc); the process then keeps the libc defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``mallopt`` parameters, from <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_policy: str | None = None


def _mallopt(*settings: tuple[int, int]) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, int(value)) == 1 for param, value in settings)


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed blocks below ``mmap_threshold`` in the heap for reuse (once per process).

    Parameters
    ----------
    mmap_threshold : int
        Allocations of this many bytes and more are still mapped directly.
    trim_threshold : int
        Free memory at the top of the heap is given back only beyond this many bytes.

    Returns
    -------
    bool
        True when this policy is in force (applied now or before); False without glibc,
        or when :func:`return_freed_memory` was chosen in this process (it wins).
    """
    global _policy
    if _policy is not None:
        return _policy == "keep"
    if not _mallopt((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold)):
        return False
    _policy = "keep"
    return True


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Serve allocations of ``threshold`` bytes and more with ``mmap`` (given back on free).

    With the dynamic threshold, once ZeRO-3 has partitioned a model and freed the full
    weights, later tensors below that size come from the heap, which is not given back:
    a 376M-parameter masked-modeling step peaked at 8.4 GiB per rank with ZeRO-3 against
    6.2 with ZeRO-0; with a fixed threshold, 5.1.

    Returns
    -------
    bool
        True when applied; False without glibc.
    """
    global _policy
    trim_default = 128 << 10  # glibc's default, in case keep_freed_memory raised it
    if not _mallopt((_M_MMAP_THRESHOLD, threshold), (_M_TRIM_THRESHOLD, trim_default)):
        return False
    _policy = "return"
    return True


def heap_policy() -> str | None:
    """The policy chosen in this process: ``"keep"``, ``"return"`` or None (libc defaults)."""
    return _policy
