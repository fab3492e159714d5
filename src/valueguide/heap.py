"""How a job's memory is managed: Python's garbage collector kept off long-lived objects, and the C
heap kept from handing freed buffers back to the kernel."""

from __future__ import annotations

import ctypes
import gc
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BELOW = 1 << 30  # bytes


def settle() -> None:
    """Collect once, then freeze every object alive (imported modules, models, tokenizers: some 400k).

    Decoding across vocabularies keeps memos (re-tokenised windows, appended pieces) that grow as it
    goes; without this they set off full collections that walk every long-lived object, about a
    quarter of a second each on a CPU (a third of a tiny IVG run). Frozen objects are not walked."""
    gc.collect()
    gc.freeze()


def keep_freed_memory() -> bool:
    """Have glibc reuse freed buffers below 1 GiB instead of unmapping them (Linux; a no-op elsewhere).

    A step of decoding or fitting allocates and frees tensors of tens of MB (logits over a 50,257-token
    vocabulary). By default glibc maps every block above 32 MB afresh and trims the heap after frees,
    so each step page-faults its buffers again: a third of a tiny generate job was kernel time (12.8 s of
    31 s for gpt2-large/cbs_explicit). Kept, they cost no more memory than the job's peak. Returns
    whether both settings took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return all(mallopt(option, KEEP_BELOW) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
