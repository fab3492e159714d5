"""A job's C heap keeps freed buffers: a step that allocates and frees tens of MB does not page-fault
them in again (the kernel time that was a third of a tiny generate job)."""

import resource
import subprocess
import sys

import pytest

STEPS = 40
FAULTS_OF_STEPS = """
import resource, sys, torch
from valueguide.heap import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(10):  # the first steps grow the heap: their faults are paid either way
    torch.empty(48 << 20, dtype=torch.uint8).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({steps}):
    torch.empty(48 << 20, dtype=torch.uint8).fill_(1)  # 48 MiB, written, freed: one step's logits
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""".format(steps=STEPS)


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_STEPS, mode], capture_output=True, text=True, check=True)
    took, faults = out.stdout.split()
    return took, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_buffers_are_reused_not_faulted_in_again():
    took, kept = _faults("keep")
    _, default = _faults("default")
    assert took == "True"
    pages = (48 << 20) // resource.getpagesize()
    assert default > STEPS * pages // 2  # each step faults its buffer in again
    assert kept < pages  # less than one step's
