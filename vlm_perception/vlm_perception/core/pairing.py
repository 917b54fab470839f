"""Which color frame to evaluate when depth is wanted: pairing as a synchronizer would.

A camera driver publishes color and depth with one stamp, but they reach the
node separately and depth often later (bigger, encoded after color, or a busy
CPU). Evaluating the newest color frame the moment a query runs then finds no
depth for it. Like message_filters' ApproximateTime, a color frame is evaluated
together with a depth frame stamped within `sync_slop` of it:
- the newest color frame, once its depth partner is here;
- while it is not, wait for it, but at most `sync_slop` past the color frame's
  arrival;
- when that wait ran out, the newest color frame whose partner did arrive
  (a few frames are kept for this, see LatestFrame's history);
- when none has one, the newest color frame, and the caller says that the
  wait ran out.
All of this only while depth is being received (a depth frame in the last
DEPTH_LIVE_S); without depth there is nothing to wait for.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from .frames import FrameRef, LatestFrame, StampedBuffer

DEPTH_LIVE_S = 1.0  # depth counts as "being received" while a frame came within this long


def depth_is_live(depth: StampedBuffer, clock: Callable[[], float] = time.monotonic) -> bool:
    """Whether depth is being received: a depth frame arrived within the last DEPTH_LIVE_S."""
    last = depth.last_arrival_s
    return last is not None and clock() - last <= DEPTH_LIVE_S


@dataclass(frozen=True)
class ColorPick:
    seq: int  # the color frame to evaluate
    wait_ran_out: bool  # the newest frame's depth did not come within sync_slop, and no stored frame had depth


def pick_color(colors: LatestFrame, depth: StampedBuffer, sync_slop_s: float,
               clock: Callable[[], float] = time.monotonic) -> Optional[ColorPick]:
    """The color frame to evaluate with depth; None before the first color frame. May block for up
    to `sync_slop_s` (past the newest color frame's arrival) waiting for that frame's depth."""
    recent = colors.recent()
    if not recent:
        return None
    newest = recent[0]
    if not depth_is_live(depth, clock):
        return ColorPick(newest.seq, False)
    slop_ns = int(round(sync_slop_s * 1e9))
    deadline = newest.arrived_s + sync_slop_s
    if depth.wait_for_partner(newest.stamp_ns, slop_ns, deadline):
        return ColorPick(newest.seq, False)
    # Re-read: frames that arrived during the wait count too.
    paired: Optional[FrameRef] = next(
        (ref for ref in colors.recent() if depth.has_partner(ref.stamp_ns, slop_ns)), None)
    if paired is not None:
        return ColorPick(paired.seq, False)
    return ColorPick(newest.seq, True)
