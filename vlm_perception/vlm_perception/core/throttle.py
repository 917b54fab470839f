"""Warnings for repeated problems: a new problem at once, the same one at most once a period.

rclpy's own throttling is per call site, so one problem on a topic would hide
a different one behind it for the whole period. Messages that differ only in
their numbers (an age, a byte count) count as the same problem.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Callable

_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


class ProblemThrottle:
    def __init__(self, emit: Callable[[str], None], period_s: float) -> None:
        self._emit = emit
        self._period_s = period_s
        self._last: dict[str, tuple[str, float]] = {}  # channel -> (problem, when it was emitted)
        self._lock = threading.Lock()

    def warn(self, channel: str, message: str) -> None:
        problem = _NUMBERS.sub("#", message)
        now = time.monotonic()
        with self._lock:
            previous = self._last.get(channel)
            if previous is not None and previous[0] == problem and now - previous[1] < self._period_s:
                return
            self._last[channel] = (problem, now)
        self._emit(message)
