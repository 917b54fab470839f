from vlm_perception.core.throttle import ProblemThrottle


def test_new_problems_at_once_repeats_once_per_period(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("vlm_perception.core.throttle.time.monotonic", lambda: clock[0])
    emitted = []
    throttle = ProblemThrottle(emitted.append, period_s=5.0)
    throttle.warn("image", "frame is 5.1 s old")
    throttle.warn("image", "frame is 6.3 s old")  # same problem, other numbers: held back
    throttle.warn("image", "unsupported encoding 'yuv422'")  # a different problem: at once
    throttle.warn("depth", "unsupported encoding 'yuv422'")  # another channel: at once
    clock[0] += 5.0
    throttle.warn("image", "unsupported encoding 'yuv422'")  # the period has passed
    assert emitted == ["frame is 5.1 s old", "unsupported encoding 'yuv422'",
                       "unsupported encoding 'yuv422'", "unsupported encoding 'yuv422'"]
