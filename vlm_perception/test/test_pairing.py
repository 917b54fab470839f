"""Choosing the color frame to evaluate with depth, as message_filters' ApproximateTime pairs them."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vlm_perception.core.frames import LatestFrame, StampedBuffer
from vlm_perception.core.pairing import DEPTH_LIVE_S, pick_color

MS = 1_000_000
SLOP_S = 0.05


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pixels() -> np.ndarray:
    return np.zeros((2, 2, 3), np.uint8)


def color(frames: LatestFrame, stamp_ms: int) -> None:
    frames.put(f"h{stamp_ms}", stamp_ms * MS, stamp_ms * MS, pixels)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def streams(clock: FakeClock) -> tuple[LatestFrame, StampedBuffer]:
    return LatestFrame(history=8, clock=clock), StampedBuffer(clock=clock)


def test_without_depth_the_newest_frame_is_taken_at_once(streams, clock):
    colors, depth = streams
    assert pick_color(colors, depth, SLOP_S, clock) is None  # no color frame yet
    color(colors, 0)
    color(colors, 100)
    pick = pick_color(colors, depth, SLOP_S, clock)
    assert (pick.seq, pick.wait_ran_out) == (2, False)


def test_depth_that_stopped_is_not_waited_for(streams, clock):
    colors, depth = streams
    depth.put(0, "d0")
    clock.now += DEPTH_LIVE_S + 0.1
    color(colors, 1200)
    start = time.monotonic()
    pick = pick_color(colors, depth, 5.0, clock)  # a wait would take 5 s of the fake clock: it never ends
    assert (pick.seq, pick.wait_ran_out) == (1, False) and time.monotonic() - start < 1.0


def test_newest_frame_with_its_depth_here_is_taken(streams, clock):
    colors, depth = streams
    for stamp in (0, 100):
        color(colors, stamp)
        depth.put(stamp * MS + 20 * MS, f"d{stamp}")  # within the slop, either side counts
    assert pick_color(colors, depth, SLOP_S, clock).seq == 2


def test_when_the_newest_frames_depth_is_late_the_newest_paired_frame_is_taken(streams, clock):
    colors, depth = streams
    for stamp in (0, 100, 200):
        color(colors, stamp)
    depth.put(0, "d0")
    depth.put(100 * MS, "d100")
    clock.now += SLOP_S  # frame 200 arrived sync_slop ago: its wait has run out
    pick = pick_color(colors, depth, SLOP_S, clock)
    assert (pick.seq, pick.wait_ran_out) == (2, False)


def test_no_frame_with_depth_takes_the_newest_and_says_the_wait_ran_out(streams, clock):
    colors, depth = streams
    depth.put(0, "d0")
    for stamp in (100, 200):
        color(colors, stamp)
    clock.now += SLOP_S
    pick = pick_color(colors, depth, SLOP_S, clock)
    assert (pick.seq, pick.wait_ran_out) == (2, True)


def test_a_frame_beyond_the_history_is_not_chosen(clock):
    colors, depth = LatestFrame(history=2, clock=clock), StampedBuffer(clock=clock)
    for stamp in (0, 100, 200):
        color(colors, stamp)
    depth.put(0, "d0")  # partner of frame 1, which has left the history
    clock.now += SLOP_S
    assert [ref.seq for ref in colors.recent()] == [3, 2]
    pick = pick_color(colors, depth, SLOP_S, clock)
    assert (pick.seq, pick.wait_ran_out) == (3, True)


@pytest.mark.parametrize("delay_s", [0.02, 0.04])
def test_waits_for_depth_that_arrives_within_the_slop(delay_s):
    # Real time here: the wait blocks until the depth thread puts the partner.
    colors, depth = LatestFrame(history=8), StampedBuffer()
    depth.put(0, "d0")
    color(colors, 0)
    color(colors, 100)
    late = threading.Timer(delay_s, depth.put, (100 * MS, "d100"))
    start = time.monotonic()
    late.start()
    pick = pick_color(colors, depth, SLOP_S)
    waited = time.monotonic() - start
    late.join()
    assert (pick.seq, pick.wait_ran_out) == (2, False)
    assert delay_s * 0.9 <= waited


def test_gives_up_sync_slop_after_the_frame_arrived():
    colors, depth = LatestFrame(history=8), StampedBuffer()
    depth.put(0, "d0")
    color(colors, 0)
    color(colors, 100)
    start = time.monotonic()
    pick = pick_color(colors, depth, SLOP_S)
    assert (pick.seq, pick.wait_ran_out) == (1, False)  # frame 2's depth never came: frame 1 has its own
    assert SLOP_S * 0.9 <= time.monotonic() - start


def test_latest_frame_holds_only_the_frames_asked_to_keep(clock):
    colors = LatestFrame(history=3, clock=clock)
    for stamp in (0, 100, 200):
        color(colors, stamp)
    colors.put("h300", 300 * MS, 300 * MS, pixels, keep=1)  # no depth any more: older frames go
    assert [ref.seq for ref in colors.recent()] == [4]
    for stamp in (400, 500, 600, 700):
        colors.put(f"h{stamp}", stamp * MS, stamp * MS, pixels, keep=8)  # never beyond `history`
    assert [ref.seq for ref in colors.recent()] == [8, 7, 6]


def test_latest_frame_converts_an_older_frame_on_request(clock):
    colors = LatestFrame(history=3, clock=clock)
    for stamp in (0, 100, 200, 300):
        color(colors, stamp)
    assert colors.get(1) is None  # left the history
    older = colors.get(2)
    assert (older.seq, older.header, older.stamp_ns) == (2, "h100", 100 * MS)
    assert colors.get().seq == 4
