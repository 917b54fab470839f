"""Health statistics and diagnostics content for the node, free of ROS.

The node records events here (frames arriving, evaluations, latencies) from
its callback threads and, once a second, turns snapshots into `HealthStatus`
values that its ROS side copies into diagnostic_msgs/DiagnosticStatus. All
times are integer nanoseconds on one clock chosen by the caller (the node's
clock, so replayed bags with use_sim_time age frames consistently).
"""
from __future__ import annotations

import math
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Optional, Sequence

import numpy as np

NS_PER_S = 1_000_000_000
MIB = 1024 * 1024
# Labels of a ROS 2 lifecycle node's states, transition states included (diagnostics may be
# reported mid-transition); only "active" serves and expects frames.
NODE_STATES = ("unknown", "unconfigured", "inactive", "active", "finalized", "configuring", "cleaningup",
               "shuttingdown", "activating", "deactivating", "errorprocessing")
# An age over this many times stale_after_s is an error, not a warning.
STALE_ERROR_FACTOR = 3.0


class Level(IntEnum):
    """The levels of diagnostic_msgs/DiagnosticStatus, with the same values."""

    OK = 0
    WARN = 1
    ERROR = 2


class RateMeter:
    """Events per second over a sliding time window; thread-safe, bounded memory.

    At most `max_events` timestamps are kept: above max_events / window_s
    events per second the rate is measured over the newest max_events events,
    which spans less than the window but is just as accurate.
    """

    def __init__(self, window_s: float = 5.0, max_events: int = 1000) -> None:
        if not window_s > 0.0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_events < 2:
            raise ValueError(f"max_events must be at least 2 to measure a rate, got {max_events}")
        self._window_ns = int(window_s * NS_PER_S)
        self._times: deque[int] = deque(maxlen=max_events)
        self._lock = threading.Lock()

    def tick(self, now_ns: int) -> None:
        with self._lock:
            if self._times and now_ns < self._times[-1]:
                # The clock went back (a replayed bag restarted): older events are from another timeline.
                self._times.clear()
            self._times.append(now_ns)
            self._drop_older_than(now_ns - self._window_ns)

    def rate(self, now_ns: int) -> float:
        """Events per second in the window ending at now_ns; 0 with fewer than 2 events in it."""
        with self._lock:
            self._drop_older_than(now_ns - self._window_ns)
            if len(self._times) < 2:
                return 0.0
            oldest, newest = self._times[0], self._times[-1]
            # Measured up to now, not to the newest event, so the rate falls as soon as events stop.
            span_ns = max(now_ns, newest) - oldest
            return (len(self._times) - 1) * NS_PER_S / span_ns if span_ns > 0 else 0.0

    def _drop_older_than(self, start_ns: int) -> None:
        while self._times and self._times[0] < start_ns:
            self._times.popleft()


class LatencyStats:
    """Percentiles of the most recent `capacity` latencies; thread-safe, bounded memory."""

    def __init__(self, capacity: int = 200) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._samples: deque[float] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        if not (math.isfinite(ms) and ms >= 0.0):
            raise ValueError(f"a latency must be a finite number of milliseconds >= 0, got {ms}")
        with self._lock:
            self._samples.append(float(ms))

    @property
    def count(self) -> int:
        """How many latencies the percentiles are computed over (at most capacity)."""
        with self._lock:
            return len(self._samples)

    def percentile(self, p: float) -> Optional[float]:
        """The p-th percentile (0..100, linear interpolation as numpy's default); None when empty."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be within 0..100, got {p}")
        with self._lock:
            samples = list(self._samples)
        return float(np.percentile(samples, p)) if samples else None


@dataclass(frozen=True)
class CameraSnapshot:
    """One camera's counters at one moment; see CameraHealth for what each count means."""

    name: str
    topic: str
    received: int
    rejected: int
    evaluated: int
    skipped: int
    unused: int
    input_rate_hz: float
    last_frame_ns: Optional[int]  # receive time of the newest accepted frame; None before the first
    last_rejected_ns: Optional[int]  # receive time of the newest rejected frame; None if none was
    last_rejection: str  # why that frame was rejected; empty if none was
    diagnosis: str = ""  # why no frames arrive, as the node's graph check tells; empty while they do

    def frame_age_s(self, now_ns: int) -> Optional[float]:
        """Seconds since the newest accepted frame arrived; None before the first."""
        if self.last_frame_ns is None:
            return None
        return max(0, now_ns - self.last_frame_ns) / NS_PER_S


@dataclass
class _HeldFrame:
    seq: int
    wanted: bool  # standing queries were active when it arrived
    evaluated: bool


class CameraHealth:
    """Per-camera frame counters; thread-safe.

    Every frame that arrives is `received`, and then exactly one of:
    - rejected: bad input (encoding, size, corrupt data); never stored.
    - evaluated: taken by at least one evaluation (standing queries or a
      service call) while the node still held it.
    - skipped: left the node's frame store unevaluated while standing queries
      were active when it arrived, i.e. the node meant to evaluate frames but
      the camera is faster than rate_hz or than inference.
    - unused: left the store unevaluated while no standing queries were
      active; nothing wanted it, so this is not a sign of falling behind.
    - still held and not yet evaluated (not counted yet).
    So received = rejected + evaluated + skipped + unused + held unevaluated.
    Counting skipped as received - evaluated - rejected would report every
    frame of a camera as skipped when there are no standing queries.

    The node calls `accepted(..., held)` once per frame it stores in
    frames.LatestFrame, with the `keep` it stored it with (the store holds the
    newest `held` frames: 1, or a few while depth pairing may pick an older
    one), so the two number and drop frames alike; and `evaluated(frame.seq)`
    when an evaluation takes the frame (before inference, which may take
    longer than a frame period). An evaluation may take a frame between its
    put() and its accepted() call; it is counted when accepted() comes.
    """

    def __init__(self, name: str, topic: str, rate_window_s: float = 5.0) -> None:
        self.name = name
        self.topic = topic
        self._rate = RateMeter(rate_window_s)
        self._lock = threading.Lock()
        self._received = 0
        self._rejected = 0
        self._evaluated = 0
        self._skipped = 0
        self._unused = 0
        self._seq = 0  # accepted frames so far: the seq of the newest one
        self._held: deque[_HeldFrame] = deque()  # what the frame store holds, oldest first
        self._taken_early = 0  # seq of a frame evaluated before its accepted() call
        self._last_frame_ns: Optional[int] = None
        self._last_rejected_ns: Optional[int] = None
        self._last_rejection = ""
        self._diagnosis = ""

    @property
    def received(self) -> int:
        with self._lock:
            return self._received

    def set_diagnosis(self, text: str) -> None:
        """Why no frames arrive and what to change (from the ROS side's graph check); "" when they do."""
        with self._lock:
            self._diagnosis = text

    def accepted(self, now_ns: int, wanted: bool, held: int = 1) -> None:
        """A good frame arrived; `wanted`: standing queries are active, so it is meant to be evaluated;
        `held`: how many of the newest frames the store keeps from now on (LatestFrame.put's keep)."""
        self._rate.tick(now_ns)
        with self._lock:
            self._received += 1
            self._seq += 1
            frame = _HeldFrame(self._seq, wanted, evaluated=self._taken_early == self._seq)
            if frame.evaluated:
                self._evaluated += 1
            self._held.append(frame)
            while len(self._held) > max(1, held):
                dropped = self._held.popleft()
                if dropped.evaluated:
                    continue
                if dropped.wanted:
                    self._skipped += 1
                else:
                    self._unused += 1
            self._last_frame_ns = now_ns

    def rejected(self, now_ns: int, reason: str) -> None:
        """A frame arrived that could not be used; `reason` says why (shown in diagnostics)."""
        self._rate.tick(now_ns)
        with self._lock:
            self._received += 1
            self._rejected += 1
            self._last_rejected_ns = now_ns
            self._last_rejection = reason

    def evaluated(self, seq: int) -> None:
        """An evaluation took accepted frame number `seq` (frames.Frame.seq).

        Several evaluations of one frame count it once. A frame reported only
        after it left the store was already counted when it left.
        """
        with self._lock:
            if seq > self._seq + 1:
                raise ValueError(
                    f"frame {seq} was evaluated but only {self._seq} were accepted on {self.topic}; "
                    "call accepted() once per frame stored in LatestFrame")
            if seq == self._seq + 1:
                self._taken_early = seq
                return
            for frame in self._held:
                if frame.seq == seq and not frame.evaluated:
                    frame.evaluated = True
                    self._evaluated += 1

    def snapshot(self, now_ns: int) -> CameraSnapshot:
        input_rate_hz = self._rate.rate(now_ns)
        with self._lock:
            return CameraSnapshot(
                name=self.name, topic=self.topic, received=self._received, rejected=self._rejected,
                evaluated=self._evaluated, skipped=self._skipped, unused=self._unused,
                input_rate_hz=input_rate_hz, last_frame_ns=self._last_frame_ns,
                last_rejected_ns=self._last_rejected_ns, last_rejection=self._last_rejection,
                diagnosis=self._diagnosis)


@dataclass(frozen=True)
class HealthStatus:
    """Content of one diagnostic_msgs/DiagnosticStatus (level is its byte value)."""

    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


def build_statuses(
    *,
    node_name: str,
    state: str,
    backend: str,
    model: str,
    device: str,
    cameras: Sequence[CameraSnapshot],
    latency_p50_ms: Optional[float],
    latency_p95_ms: Optional[float],
    queries_per_s: float,
    gpu_memory_mib: Optional[float],
    now_ns: int,
    stale_after_s: float,
    latency_warn_ms: float,
) -> list[HealthStatus]:
    """The statuses of one diagnostics report: the node's, then one per camera.

    state: the node's lifecycle state (NODE_STATES); frames and latency are
    only judged while it is "active". model: "" for the backend's default.
    stale_after_s: a newest frame older than this is a WARN, older than
    STALE_ERROR_FACTOR times this (or no frame at all) an ERROR.
    latency_warn_ms: a p95 inference latency above this is a WARN; 0 disables.
    """
    if state not in NODE_STATES:
        raise ValueError(f"state '{state}' is not one of {', '.join(NODE_STATES)}")
    if not stale_after_s > 0.0:
        raise ValueError(f"stale_after_s must be > 0 s, got {stale_after_s}")
    if not latency_warn_ms >= 0.0:
        raise ValueError(f"latency_warn_ms must be >= 0 (0 disables the check), got {latency_warn_ms}")
    node = _node_status(node_name, state, backend, model, device, latency_p50_ms, latency_p95_ms,
                        queries_per_s, gpu_memory_mib, latency_warn_ms)
    return [node] + [_camera_status(node_name, state, camera, now_ns, stale_after_s) for camera in cameras]


def _node_status(node_name: str, state: str, backend: str, model: str, device: str,
                 p50: Optional[float], p95: Optional[float], queries_per_s: float,
                 gpu_mib: Optional[float], latency_warn_ms: float) -> HealthStatus:
    values = {
        "state": state,
        "backend": backend,
        "model": model or "(backend default)",
        "device": device,
        "latency_p50_ms": _number(p50, 1),
        "latency_p95_ms": _number(p95, 1),
        "queries_per_s": _number(queries_per_s, 2),
    }
    if gpu_mib is not None:
        values["gpu_memory_mib"] = _number(gpu_mib, 0)
    level, message = Level.OK, state
    if state == "active" and latency_warn_ms > 0.0 and p95 is not None and p95 > latency_warn_ms:
        level = Level.WARN
        message = (f"inference p95 latency {p95:.0f} ms is over latency_warn_ms {latency_warn_ms:g} ms; "
                   "use a smaller model or a faster device, or raise latency_warn_ms")
    return HealthStatus(f"{node_name}: node", int(level), message, values)


def _camera_status(node_name: str, state: str, camera: CameraSnapshot, now_ns: int,
                   stale_after_s: float) -> HealthStatus:
    age = camera.frame_age_s(now_ns)
    values = {
        "topic": camera.topic,
        "input_rate_hz": _number(camera.input_rate_hz, 1),
        "frame_age_s": _number(age, 2),
        "frames_received": str(camera.received),
        "frames_rejected": str(camera.rejected),
        "frames_evaluated": str(camera.evaluated),
        "frames_skipped": str(camera.skipped),
        "frames_unused": str(camera.unused),
    }
    if camera.last_rejection:
        values["last_rejection"] = camera.last_rejection
    if camera.diagnosis:
        values["diagnosis"] = camera.diagnosis
    level, message = Level.OK, "ok"
    if state != "active":
        message = state  # nothing is evaluated, so old frames are expected
    elif age is None or age > STALE_ERROR_FACTOR * stale_after_s:
        level = Level.ERROR
        message = f"{_no_frames(camera, age)}; {camera.diagnosis or _check_input()}"
    elif age > stale_after_s:
        level, message = Level.WARN, _no_frames(camera, age) + (f"; {camera.diagnosis}" if camera.diagnosis else "")
    return HealthStatus(f"{node_name}: camera {camera.name}", int(level), message, values)


def _no_frames(camera: CameraSnapshot, age: Optional[float]) -> str:
    text = f"no frames received on {camera.topic}" if age is None else f"no frames for {age:.1f} s on {camera.topic}"
    newest_rejected = camera.last_rejected_ns is not None and (
        camera.last_frame_ns is None or camera.last_rejected_ns > camera.last_frame_ns)
    if newest_rejected:
        # The camera publishes, but what it sends cannot be used: that is what to fix.
        text += f" that could be used ({camera.rejected} rejected, the last because: {camera.last_rejection})"
    return text


def _check_input() -> str:
    return ("check that the camera is publishing, that `image` is remapped to its topic "
            "and that image_qos matches the publisher's QoS")


def _number(value: Optional[float], decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def gpu_memory_mib(device: object) -> Optional[float]:
    """GPU memory torch has allocated on `device`, in MiB; None unless it is in use on CUDA.

    `device` is a device string ("cuda", "cuda:1", "auto", "cpu") or a
    torch.device. Never imports torch or starts a CUDA context just to
    report on them: a backend that uses the GPU has done both already.
    """
    torch = sys.modules.get("torch")
    name = str(device)
    if torch is None or not (name == "auto" or name.startswith("cuda")):
        return None
    if not torch.cuda.is_initialized():
        return None
    index = None if name in ("auto", "cuda") else name
    return torch.cuda.memory_allocated(index) / MIB
