"""Busy-loop processes that keep CPU cores busy beside the node, as other work on a robot does.

Each hog is a separate process (no shared GIL with anything measured) that spins
for at most `limit_s` seconds, so a crashed test or benchmark cannot leave one behind.
"""
from __future__ import annotations

import subprocess
import sys
from types import TracebackType
from typing import Optional

BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


class CpuHog:
    """`with CpuHog(cores=1):` keeps `cores` cores busy until the block ends (or `limit_s` passes)."""

    def __init__(self, cores: int = 1, limit_s: float = 120.0) -> None:
        self._cores = cores
        self._limit_s = limit_s
        self._processes: list[subprocess.Popen] = []

    def __enter__(self) -> "CpuHog":
        self._processes = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(self._limit_s)])
                           for _ in range(self._cores)]
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        for process in self._processes:
            process.kill()
        for process in self._processes:
            process.wait()
        self._processes = []
