"""The latest camera frame, stored cheaply and converted once on demand.

The image callback only stores what arrived (O(1)); the conversion to an RGB
array happens on the first inference thread that needs it, once per frame, so
every query on that frame shares one read-only array (and with it the
backend's per-frame feature cache).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np


def stamp_to_ns(stamp: Any) -> int:
    """A builtin_interfaces/Time (sec, nanosec) in integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class Frame:
    seq: int  # increases by one per stored frame
    header: Any  # the source image's std_msgs/Header, passed through untouched
    stamp_ns: int  # header stamp in nanoseconds
    received_ns: int  # receive time on the node's clock
    rgb: np.ndarray  # read-only RGB uint8 (H, W, 3)


class LatestFrame:
    """Keeps only the newest frame; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: Optional[tuple[int, Any, int, int, Callable[[], np.ndarray]]] = None
        self._converted: Optional[Frame] = None
        self._convert_lock = threading.Lock()

    def put(self, header: Any, stamp_ns: int, received_ns: int, convert: Callable[[], np.ndarray]) -> None:
        with self._lock:
            self._seq += 1
            self._pending = (self._seq, header, stamp_ns, received_ns, convert)

    @property
    def seq(self) -> int:
        """0 until the first frame arrives."""
        with self._lock:
            return self._seq

    def get(self) -> Optional[Frame]:
        """The newest frame, converted; None before the first one."""
        with self._lock:
            pending = self._pending
        if pending is None:
            return None
        seq, header, stamp_ns, received_ns, convert = pending
        # One conversion per frame even when several queries ask at once.
        with self._convert_lock:
            if self._converted is None or self._converted.seq < seq:
                rgb = convert()
                rgb.flags.writeable = False
                self._converted = Frame(seq, header, stamp_ns, received_ns, rgb)
            return self._converted


@dataclass(frozen=True)
class StampedMsg:
    stamp_ns: int
    msg: Any


class StampedBuffer:
    """The last few messages of a topic, to pair with a color frame by time; thread-safe."""

    def __init__(self, capacity: int = 30) -> None:
        self._items: deque[StampedMsg] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def put(self, stamp_ns: int, msg: Any) -> None:
        with self._lock:
            self._items.append(StampedMsg(stamp_ns, msg))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def closest(self, stamp_ns: int) -> Optional[StampedMsg]:
        """The message stamped closest to `stamp_ns`; None when empty."""
        with self._lock:
            return min(self._items, key=lambda item: abs(item.stamp_ns - stamp_ns), default=None)
