"""Peak host memory (resident set) of this process over a stretch of code, for the benchmarks' "peak RAM".

`resource.getrusage(...).ru_maxrss` is the peak of the whole process life, so it cannot tell one offloading
mode from the next in the same process; psutil has no per-interval peak either. A sampling thread is the
usual way (memory_profiler does the same); pinned host memory counts, since it is mapped and resident.
"""

from __future__ import annotations

import threading

import psutil

# 5 ms between samples: the copies and allocations that move GiBs take tens of ms, so a peak is not
# missed by more than what a few ms of copying adds; a thread that wakes 200 times a second costs
# nothing measurable next to a denoising step.
SAMPLE_SECONDS = 0.005


class PeakRSS:
    """`with PeakRSS() as p: ...` then `p.peak_bytes` (the largest RSS seen, the start and end included)."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakRSS":
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._sample()
