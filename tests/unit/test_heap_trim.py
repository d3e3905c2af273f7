"""HeapTrim: a long-running program hands the C heap's free pages back now and then (shared/service.py)."""
from shared.service import HeapTrim


def test_the_heap_is_trimmed_at_most_every_interval_and_gives_memory_back():
    now = [100.0]
    heap = HeapTrim(lambda: now[0])
    assert heap._trim is not None   # glibc: the CI machine and every deployment target
    heap.maybe()
    assert heap.trims == 0          # not before the first interval is over
    now[0] += heap.every
    heap.maybe()
    heap.maybe()
    assert heap.trims == 1
    now[0] += heap.every - 1
    heap.maybe()
    assert heap.trims == 1
    now[0] += 1
    heap.maybe()
    assert heap.trims == 2


def test_a_trim_returns_freed_heap_pages():
    """Free holes between live objects stay resident until trimmed (what the week soak showed)."""
    import ctypes

    def anon_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    keep, junk = [], []
    for i in range(4000):           # interleave long-lived and short-lived C-heap blocks (> 512 bytes)
        keep.append(bytearray(600))
        junk.append(bytearray(20000 + i % 7))
    del junk
    before = anon_kb()
    ctypes.CDLL(None).malloc_trim(0)
    assert anon_kb() < before - 40000, (before, anon_kb())   # ~80 MB of holes, most of it handed back
    assert len(keep) == 4000
