"""allocator.keep_freed_memory: freed blocks stay in the process for reuse, so reusing them does not page-fault."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the tuning applies to glibc's malloc only")

# COUNT blocks of MB megabytes (a training step's activations, or a large vocabulary's embedding
# gradient) allocated, written and freed, eight times over, in a process that imported the workbench;
# prints the minor page faults of the last seven rounds. With glibc's defaults four freed 8 MB blocks at
# the top of the heap exceed its trim threshold and go back to the kernel, and a 48 MB block is an mmap
# (above even the 32 MB cap on the mmap threshold), so every round faults on fresh 4 KB pages: ~8,160
# or ~12,290 of them; kept, the later rounds fault on none.
# (Plain malloc, not torch tensors: the allocation pattern, and so the count, is then deterministic.)
PROBE = """
import ctypes, resource, sys, workbench
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
n, count, faults = int(sys.argv[1]) * 1024 * 1024, int(sys.argv[2]), []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(n) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, n)
    for b in blocks:
        libc.free(b)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def page_faults(mb: int, count: int, **env: str) -> int:
    base = {k: v for k, v in os.environ.items() if k != "WORKBENCH_MALLOC"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(mb), str(count)], capture_output=True, text=True,
                         check=True, env={**base, **env})
    return int(out.stdout.split()[-1])


@pytest.mark.parametrize("mb,count", [(8, 4), (48, 1)], ids=["four_8MB_blocks", "one_48MB_block"])
def test_freed_memory_is_reused_without_page_faults(mb, count):
    assert page_faults(mb, count) < 500
    # what glibc's defaults cost: the probe measures it
    assert page_faults(mb, count, WORKBENCH_MALLOC="default") > 7 * 0.95 * mb * count * 256


def test_keep_freed_memory_is_applied_once_and_can_be_declined(monkeypatch):
    from workbench import allocator

    assert allocator.keep_freed_memory() is True  # importing the workbench applied it
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv("WORKBENCH_MALLOC", "default")
    assert allocator.keep_freed_memory() is False
