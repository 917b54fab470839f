import sys
import types

import numpy as np
import pytest

from vlm_perception.core.health import (
    CameraHealth,
    LatencyStats,
    Level,
    RateMeter,
    build_statuses,
    gpu_memory_mib,
)

S = 1_000_000_000  # one second in ns
TOPIC = "/arm/camera/image_raw"


def test_rate_over_the_window_and_zero_with_fewer_than_two_events():
    meter = RateMeter(window_s=5.0)
    assert meter.rate(0) == 0.0
    meter.tick(0)
    assert meter.rate(0) == 0.0
    for i in range(1, 31):  # 30 Hz for one second
        meter.tick(i * S // 30)
    assert meter.rate(S) == pytest.approx(30.0)
    # Events older than the window no longer count; the rate falls once events stop.
    assert meter.rate(3 * S) == pytest.approx(10.0)
    assert meter.rate(S + 5 * S + 1) == 0.0


def test_rate_stays_right_and_memory_bounded_at_high_rates():
    meter = RateMeter(window_s=5.0, max_events=100)
    for i in range(1, 50_001):  # 10 kHz for 5 s
        meter.tick(i * S // 10_000)
    assert len(meter._times) == 100
    assert meter.rate(5 * S) == pytest.approx(10_000.0, rel=1e-3)


def test_rate_restarts_when_the_clock_goes_back():
    meter = RateMeter(window_s=5.0)
    for i in range(50):
        meter.tick(100 * S + i * S // 10)
    meter.tick(S)  # a replayed bag restarted
    assert meter.rate(S) == 0.0
    meter.tick(S + S // 2)
    assert meter.rate(S + S // 2) == pytest.approx(2.0)


def test_latency_percentiles_match_numpy_over_the_most_recent_samples():
    stats = LatencyStats(capacity=200)
    assert stats.percentile(50) is None and stats.count == 0
    samples = np.random.default_rng(0).gamma(2.0, 40.0, size=1000)
    for ms in samples:
        stats.add(float(ms))
    assert stats.count == 200
    recent = samples[-200:]
    for p in (0, 50, 95, 100):
        assert stats.percentile(p) == pytest.approx(np.percentile(recent, p))


def test_latency_stats_reject_nonsense():
    stats = LatencyStats()
    with pytest.raises(ValueError, match="0..100"):
        stats.percentile(150)
    with pytest.raises(ValueError, match="finite"):
        stats.add(float("nan"))


def test_camera_counts_skipped_only_when_standing_queries_wanted_the_frame():
    camera = CameraHealth("default", TOPIC)
    # No standing queries: frames pass unevaluated, which is not falling behind.
    for i in range(1, 4):
        camera.accepted(i * S // 10, wanted=False)
    camera.evaluated(3)  # a service call on the latest frame
    camera.evaluated(3)  # a second call on the same frame counts it once
    # Standing queries at a lower rate than the camera: frames 4 and 5 were replaced unevaluated.
    for i in range(4, 7):
        camera.accepted(i * S // 10, wanted=True)
    camera.evaluated(6)
    camera.accepted(7 * S // 10, wanted=True)
    camera.evaluated(6)  # reported late, after frame 7 arrived: frame 6 was already counted
    camera.rejected(8 * S // 10, "unsupported encoding 'yuv422'")
    snap = camera.snapshot(8 * S // 10)
    assert (snap.received, snap.rejected, snap.evaluated, snap.skipped, snap.unused) == (8, 1, 2, 2, 2)
    # Every frame but the pending newest one is counted exactly once.
    assert snap.received == snap.rejected + snap.evaluated + snap.skipped + snap.unused + 1
    assert snap.input_rate_hz == pytest.approx(10.0)
    assert snap.last_frame_ns == 7 * S // 10
    assert snap.last_rejection == "unsupported encoding 'yuv422'"
    assert snap.frame_age_s(S) == pytest.approx(0.3)


def test_a_frame_taken_between_its_put_and_its_accepted_call_counts_as_evaluated():
    camera = CameraHealth("default", TOPIC)
    camera.accepted(0, wanted=True)
    camera.evaluated(2)  # the inference thread took frame 2 right after LatestFrame.put()
    camera.accepted(S // 10, wanted=True)
    camera.evaluated(2)
    camera.accepted(2 * S // 10, wanted=True)
    snap = camera.snapshot(2 * S // 10)
    assert (snap.evaluated, snap.skipped, snap.unused) == (1, 1, 0)


def test_a_held_frame_evaluated_after_a_newer_one_arrived_counts_as_evaluated_not_skipped():
    # Depth pairing: the store holds 3 frames, and an evaluation picks frame 2 (its depth is
    # here) after frames 3 and 4 arrived.
    camera = CameraHealth("default", TOPIC)
    for i in range(1, 5):
        camera.accepted(i * S // 10, wanted=True, held=3)
    camera.evaluated(2)
    snap = camera.snapshot(4 * S // 10)
    assert (snap.evaluated, snap.skipped, snap.unused) == (1, 1, 0)  # frame 1 left unevaluated
    # Depth stopped: the store keeps the newest frame only, and frames 3 and 4 leave unevaluated.
    camera.accepted(5 * S // 10, wanted=True, held=1)
    camera.evaluated(3)  # too late: frame 3 is gone and was counted skipped
    snap = camera.snapshot(5 * S // 10)
    assert (snap.received, snap.evaluated, snap.skipped, snap.unused) == (5, 1, 3, 0)
    assert snap.received == snap.evaluated + snap.skipped + 1


def test_camera_rejects_an_evaluation_of_a_frame_it_never_saw():
    camera = CameraHealth("default", TOPIC)
    camera.accepted(0, wanted=True)
    with pytest.raises(ValueError, match="accepted\\(\\) once per frame"):
        camera.evaluated(3)


def statuses(cameras, now_ns, state="active", p95=100.0, latency_warn_ms=500.0, gpu=None):
    return build_statuses(
        node_name="vlm_perception", state=state, backend="owlv2", model="", device="cpu",
        cameras=cameras, latency_p50_ms=80.0 if p95 is not None else None, latency_p95_ms=p95,
        queries_per_s=2.0, gpu_memory_mib=gpu, now_ns=now_ns, stale_after_s=2.0,
        latency_warn_ms=latency_warn_ms)


def camera_with_frame_at(received_ns):
    camera = CameraHealth("default", TOPIC)
    camera.accepted(received_ns, wanted=True)
    return camera


def test_node_status_values():
    node, = statuses([], 10 * S, gpu=1536.4)
    assert node.name == "vlm_perception: node"
    assert (node.level, node.message) == (Level.OK, "active")
    assert node.values == {
        "state": "active", "backend": "owlv2", "model": "(backend default)", "device": "cpu",
        "latency_p50_ms": "80.0", "latency_p95_ms": "100.0", "queries_per_s": "2.00", "gpu_memory_mib": "1536"}
    node, = statuses([], 10 * S, p95=None)
    assert node.values["latency_p95_ms"] == "n/a" and "gpu_memory_mib" not in node.values


def test_latency_over_the_limit_warns_naming_the_parameter_and_0_disables_it():
    node, = statuses([], 10 * S, p95=812.0)
    assert node.level == Level.WARN
    assert "p95 latency 812 ms is over latency_warn_ms 500 ms" in node.message
    assert statuses([], 10 * S, p95=812.0, latency_warn_ms=0.0)[0].level == Level.OK
    assert statuses([], 10 * S, p95=499.0)[0].level == Level.OK


@pytest.mark.parametrize("age_s, level", [(0.5, Level.OK), (2.5, Level.WARN), (5.9, Level.WARN),
                                          (6.5, Level.ERROR)])
def test_frame_age_levels(age_s, level):
    now = 100 * S
    _, camera = statuses([camera_with_frame_at(now - int(age_s * S)).snapshot(now)], now)
    assert camera.name == "vlm_perception: camera default"
    assert camera.level == level
    assert camera.values["frame_age_s"] == f"{age_s:.2f}"
    if level == Level.WARN:
        assert camera.message == f"no frames for {age_s:.1f} s on {TOPIC}"
    if level == Level.ERROR:
        assert camera.message.startswith(f"no frames for {age_s:.1f} s on {TOPIC}; check")
        assert "remapped" in camera.message and "image_qos" in camera.message


def test_no_frame_ever_is_an_error_while_active_and_ok_while_inactive():
    camera = CameraHealth("default", TOPIC).snapshot(10 * S)
    _, active = statuses([camera], 10 * S)
    assert active.level == Level.ERROR
    assert active.message.startswith(f"no frames received on {TOPIC}; check that the camera is publishing")
    assert active.values["frame_age_s"] == "n/a" and active.values["input_rate_hz"] == "0.0"
    _, inactive = statuses([camera], 10 * S, state="inactive")
    assert (inactive.level, inactive.message) == (Level.OK, "inactive")
    stale = camera_with_frame_at(0).snapshot(100 * S)
    assert statuses([stale], 100 * S, state="inactive")[1].level == Level.OK


@pytest.mark.parametrize("state", ["inactive", "unconfigured", "activating"])
def test_a_node_that_is_not_active_does_not_judge_latency_or_frames(state):
    never = CameraHealth("default", TOPIC).snapshot(10 * S)
    node, camera = statuses([never], 10 * S, state=state, p95=5000.0)
    assert (node.level, node.message) == (Level.OK, state)
    assert (camera.level, camera.message) == (Level.OK, state)


def test_frames_that_keep_being_rejected_say_why():
    camera = CameraHealth("default", TOPIC)
    camera.accepted(0, wanted=True)
    camera.rejected(S, "encoding 'yuv422' is not supported; publish rgb8 or bgr8")
    _, status = statuses([camera.snapshot(3 * S)], 3 * S)
    assert status.level == Level.WARN
    assert status.message == (f"no frames for 3.0 s on {TOPIC} that could be used (1 rejected, the last "
                              "because: encoding 'yuv422' is not supported; publish rgb8 or bgr8)")
    assert status.values["frames_rejected"] == "1"


def test_camera_values_carry_the_counters():
    camera = CameraHealth("default", TOPIC)
    for i in range(1, 11):
        camera.accepted(i * S // 10, wanted=True)
    camera.evaluated(10)
    _, status = statuses([camera.snapshot(S)], S)
    assert status.values == {
        "topic": TOPIC, "input_rate_hz": "10.0", "frame_age_s": "0.00", "frames_received": "10",
        "frames_rejected": "0", "frames_evaluated": "1", "frames_skipped": "9", "frames_unused": "0"}


def test_bad_arguments_say_what_to_fix():
    with pytest.raises(ValueError, match="state 'running' is not one of"):
        statuses([], 0, state="running")
    with pytest.raises(ValueError, match="latency_warn_ms must be >= 0"):
        statuses([], 0, latency_warn_ms=-1.0)


def test_gpu_memory_only_for_cuda_in_use(monkeypatch):
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(
        is_initialized=lambda: True, memory_allocated=lambda device=None: 3 * 1024 * 1024 if device in
        (None, "cuda:1") else 0))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    assert gpu_memory_mib("cuda") == 3.0
    assert gpu_memory_mib("cuda:1") == 3.0
    assert gpu_memory_mib("auto") == 3.0
    assert gpu_memory_mib("cpu") is None
    fake_torch.cuda.is_initialized = lambda: False  # CUDA available but nobody started it
    assert gpu_memory_mib("cuda") is None


def test_gpu_memory_never_imports_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert gpu_memory_mib("cuda") is None
    assert "torch" not in sys.modules
