"""The latest camera frames, stored cheaply and converted once on demand.

The image callback only stores what arrived (O(1)); the conversion to an RGB
array happens on the first inference thread that needs it, once per frame, so
every query on that frame shares one read-only array (and with it the
backend's per-frame feature cache). StampedBuffer keeps depth frames for
pairing with color by stamp (core.pairing).
"""
from __future__ import annotations

import threading
import time
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


@dataclass(frozen=True)
class FrameRef:
    """A stored frame before conversion: enough to choose one by time."""

    seq: int
    stamp_ns: int
    arrived_s: float  # monotonic time of put(), for waits measured on the wall clock


class LatestFrame:
    """Keeps the newest frame, and the few before it unconverted (`history`); thread-safe.

    The older ones exist so that a frame whose depth partner arrived can still be
    evaluated when the newest one's depth is late (see core.pairing).
    """

    def __init__(self, history: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._clock = clock
        self._pending: deque[tuple[FrameRef, Any, int, Callable[[], np.ndarray]]] = deque(maxlen=history)
        self._converted: Optional[Frame] = None
        self._convert_lock = threading.Lock()

    def put(self, header: Any, stamp_ns: int, received_ns: int, convert: Callable[[], np.ndarray],
            keep: Optional[int] = None) -> None:
        """Store a frame; `keep`: how many of the newest to hold from now on (at most `history`),
        so that frames nobody will pair are not held."""
        arrived_s = self._clock()
        with self._lock:
            self._seq += 1
            self._pending.append((FrameRef(self._seq, stamp_ns, arrived_s), header, received_ns, convert))
            while keep is not None and len(self._pending) > max(1, keep):
                self._pending.popleft()

    @property
    def seq(self) -> int:
        """0 until the first frame arrives."""
        with self._lock:
            return self._seq

    def recent(self) -> list[FrameRef]:
        """The stored frames, newest first."""
        with self._lock:
            return [item[0] for item in reversed(self._pending)]

    def get(self, seq: Optional[int] = None) -> Optional[Frame]:
        """Frame `seq` (default: the newest), converted; None before the first frame or once
        `seq` has left the history."""
        with self._lock:
            matches = [item for item in self._pending if seq is None or item[0].seq == seq]
        if not matches:
            return None
        ref, header, received_ns, convert = matches[-1]
        # One conversion per frame even when several queries ask at once.
        with self._convert_lock:
            if self._converted is None or self._converted.seq != ref.seq:
                rgb = convert()
                rgb.flags.writeable = False
                self._converted = Frame(ref.seq, header, ref.stamp_ns, received_ns, rgb)
            return self._converted


@dataclass(frozen=True)
class StampedMsg:
    stamp_ns: int
    msg: Any


class StampedBuffer:
    """The last few messages of a topic, to pair with a color frame by time; thread-safe.

    `wait_for_partner` lets a reader wait for the message that belongs to a frame.
    """

    def __init__(self, capacity: int = 30, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: deque[StampedMsg] = deque(maxlen=capacity)
        self._clock = clock
        self._last_arrival_s: Optional[float] = None
        self._arrived = threading.Condition()

    def put(self, stamp_ns: int, msg: Any) -> None:
        with self._arrived:
            self._items.append(StampedMsg(stamp_ns, msg))
            self._last_arrival_s = self._clock()
            self._arrived.notify_all()

    def __len__(self) -> int:
        with self._arrived:
            return len(self._items)

    @property
    def last_arrival_s(self) -> Optional[float]:
        """Monotonic time the newest message arrived; None before the first."""
        with self._arrived:
            return self._last_arrival_s

    def closest(self, stamp_ns: int) -> Optional[StampedMsg]:
        """The message stamped closest to `stamp_ns`; None when empty."""
        with self._arrived:
            return self._closest(stamp_ns)

    def _closest(self, stamp_ns: int) -> Optional[StampedMsg]:
        return min(self._items, key=lambda item: abs(item.stamp_ns - stamp_ns), default=None)

    def has_partner(self, stamp_ns: int, slop_ns: int) -> bool:
        """Whether a message stamped within `slop_ns` of `stamp_ns` is here."""
        with self._arrived:
            return self._has_partner(stamp_ns, slop_ns)

    def _has_partner(self, stamp_ns: int, slop_ns: int) -> bool:
        closest = self._closest(stamp_ns)
        return closest is not None and abs(closest.stamp_ns - stamp_ns) <= slop_ns

    def wait_for_partner(self, stamp_ns: int, slop_ns: int, deadline_s: float) -> bool:
        """Wait until a partner of `stamp_ns` arrives or the monotonic clock passes `deadline_s`;
        True when one is here."""
        with self._arrived:
            while not self._has_partner(stamp_ns, slop_ns):
                remaining = deadline_s - self._clock()
                if remaining <= 0.0:
                    return False
                self._arrived.wait(remaining)
            return True
