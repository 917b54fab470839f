import threading

import numpy as np

from vlm_perception.core.frames import LatestFrame


def test_keeps_only_the_newest_frame_and_converts_it_once():
    calls = []

    def converter(value):
        def convert():
            calls.append(value)
            return np.full((2, 2, 3), value, np.uint8)
        return convert

    latest = LatestFrame()
    assert latest.get() is None and latest.seq == 0
    latest.put("h1", 1, 10, converter(1))
    latest.put("h2", 2, 20, converter(2))
    frames = []
    threads = [threading.Thread(target=lambda: frames.append(latest.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [2]  # the older frame is never converted, the newest only once
    assert all(f is frames[0] for f in frames)
    frame = frames[0]
    assert (frame.seq, frame.header, frame.stamp_ns, frame.received_ns) == (2, "h2", 2, 20)
    assert not frame.rgb.flags.writeable  # shared by every query on the frame


def test_conversion_errors_reach_the_caller_every_time():
    latest = LatestFrame()

    def broken():
        raise ValueError("bad pixels")

    latest.put("h", 1, 1, broken)
    for _ in range(2):
        try:
            latest.get()
        except ValueError as exc:
            assert "bad pixels" in str(exc)
        else:
            raise AssertionError("expected the conversion error")
