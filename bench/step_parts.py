"""Where a decoder's time goes, part by part: CPU seconds spent inside chosen functions.

``time_parts`` wraps each named function in a timer for as long as it runs the decoder, so the
numbers are inclusive (a part that calls another counts it too) and a little above the true cost
(one clock read around each call). It is a diagnostic for the benchmarks, not part of the package.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections import Counter

import torch


@contextlib.contextmanager
def _timed(parts: dict[str, tuple[object, str]], seconds: Counter):
    originals = {label: getattr(owner, name) for label, (owner, name) in parts.items()}

    def timer(label, function):
        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            began = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] += time.process_time() - began
        return wrapped

    try:
        for label, (owner, name) in parts.items():
            setattr(owner, name, timer(label, originals[label]))
        yield
    finally:
        for label, (owner, name) in parts.items():
            setattr(owner, name, originals[label])


def time_parts(decoder, prompts: list[str], parts: dict[str, tuple[object, str]], runs: int = 5) -> dict[str, float]:
    """CPU seconds of one generation of ``decoder`` on ``prompts`` (``"total"``) and inside each part
    (label -> (class or module, function name)): those of the least disturbed of ``runs`` runs after
    a warm-up, seed 0 each (as the benchmarks' ratios take the least disturbed run)."""
    decoder.generate(prompts, torch.Generator().manual_seed(0))
    best: Counter | None = None
    for _ in range(runs):
        seconds: Counter = Counter()
        gc.collect()
        gc.disable()  # as the benchmark's timed runs
        try:
            with _timed(parts, seconds):
                began = time.process_time()
                decoder.generate(prompts, torch.Generator().manual_seed(0))
                seconds["total"] = time.process_time() - began
        finally:
            gc.enable()
        if best is None or seconds["total"] < best["total"]:
            best = seconds
    return dict(best)
