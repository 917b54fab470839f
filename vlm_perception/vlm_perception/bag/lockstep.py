"""Lockstep replay: publish a camera frame, wait until the node has answered it, then the next.

The node copies each input header into its outputs, so an answer is matched
to its frame by (header stamp, frame_id). The node's standing queries decide
what counts as the answer: the ~/presence output for the frame that holds
every query of some node's latched ~/standing_queries. A service call's
output on the same frame (fewer phrases, e.g. "pick the cup") does not
release the frame; with no standing queries known, any output does.
"""
from __future__ import annotations

import struct
import threading
import time
from typing import Any, Callable, Optional

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..core.errors import ReplayError
from ..core.frames import stamp_to_ns

PRESENCE_TYPE = "vlm_perception_msgs/msg/ObjectPresenceArray"
STANDING_TYPE = "vlm_perception_msgs/msg/StandingQueries"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
# Outputs of frames already released are forgotten beyond this many (a node that answers late).
_REMEMBERED = 1000
_SCAN_PERIOD_S = 0.5

FrameKey = tuple[int, str]


def header_key(cdr: bytes) -> FrameKey:
    """(stamp ns, frame_id) of a serialized message that starts with a std_msgs/Header (Image, CompressedImage)."""
    if len(cdr) < 16 or cdr[0] != 0 or cdr[1] not in (0, 1):
        raise ReplayError("a frame message is not CDR-encoded; lockstep needs ROS 2 (CDR) camera messages")
    order = "<" if cdr[1] == 1 else ">"
    sec, nanosec, length = struct.unpack_from(f"{order}iII", cdr, 4)
    frame_id = cdr[16:16 + length].rstrip(b"\0").decode("utf-8", "replace")
    return sec * 1_000_000_000 + nanosec, frame_id


def frame_topic(topics: dict[str, str], requested: Optional[str]) -> str:
    """The camera topic lockstep waits on: `requested`, else the one image topic named *color*, or the only one."""
    images = sorted(topic for topic, msgtype in topics.items() if msgtype in IMAGE_TYPES)
    if requested is not None:
        if requested not in images:
            raise ReplayError(f"--frame-topic {requested} is not an Image or CompressedImage topic replayed from "
                              f"the bag; its image topics: {', '.join(images) or 'none'}")
        return requested
    choices = [topic for topic in images if "color" in topic] or images
    if len(choices) != 1:
        raise ReplayError(f"--lockstep needs one camera topic to step on; the bag replays "
                          f"{', '.join(choices) or 'no image topic'}; choose one with --frame-topic")
    return choices[0]


class OutputGate:
    """The node's ~/presence outputs and ~/standing_queries under a namespace, found as they appear."""

    def __init__(self, node: Node, namespace: str, message_class: Callable[[str], Any]) -> None:
        self._node = node
        self._prefix = namespace.rstrip("/") + "/"
        self._message_class = message_class
        self._presence: dict[str, Any] = {}
        self._standing_subs: dict[str, Any] = {}
        self._standing: dict[str, frozenset[str]] = {}  # topic -> the node's standing queries
        self._answered: dict[FrameKey, None] = {}  # insertion-ordered set
        self._condition = threading.Condition()
        self._last_scan = 0.0

    def scan(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_scan < _SCAN_PERIOD_S:
            return
        self._last_scan = now
        for topic, types in self._node.get_topic_names_and_types():
            if not topic.startswith(self._prefix):
                continue
            if types[0] == PRESENCE_TYPE and topic not in self._presence:
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=self._reliability(topic))
                self._presence[topic] = self._node.create_subscription(
                    self._message_class(PRESENCE_TYPE), topic, self._on_presence, qos)
            elif types[0] == STANDING_TYPE and topic not in self._standing_subs:
                latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
                self._standing_subs[topic] = self._node.create_subscription(
                    self._message_class(STANDING_TYPE), topic, lambda msg, t=topic: self._on_standing(t, msg), latched)

    def _reliability(self, topic: str) -> ReliabilityPolicy:
        best_effort = any(info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                          for info in self._node.get_publishers_info_by_topic(topic))
        return ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE

    def ready(self) -> bool:
        """A ~/presence output found and matched, and its node's standing queries received."""
        return (any(sub.get_publisher_count() > 0 for sub in self._presence.values())
                and len(self._standing) >= len(self._standing_subs) > 0)

    def standing_queries(self) -> dict[str, frozenset[str]]:
        with self._condition:
            return dict(self._standing)

    def _on_standing(self, topic: str, msg: Any) -> None:
        with self._condition:
            self._standing[topic] = frozenset(msg.queries) if msg.rate_hz > 0 else frozenset()

    def _on_presence(self, msg: Any) -> None:
        key = (stamp_to_ns(msg.header.stamp), str(msg.header.frame_id))
        queries = {result.query for result in msg.results}
        with self._condition:
            standing = [s for s in self._standing.values() if s]
            if standing and not any(s <= queries for s in standing):
                return  # a service call's answer, not the standing queries'
            self._answered[key] = None
            while len(self._answered) > _REMEMBERED:
                del self._answered[next(iter(self._answered))]
            self._condition.notify_all()

    def wait_for(self, key: FrameKey, timeout: float, stop: threading.Event, idle: Callable[[], None]) -> bool:
        """True once the frame `key` is answered; False after `timeout` s or when stopped.

        `idle` runs every 0.1 s meanwhile (graph scans: output topics may appear late).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._condition:
                if key not in self._answered:
                    left = deadline - time.monotonic()
                    if left <= 0 or stop.is_set():
                        return False
                    self._condition.wait(min(left, 0.1))
                if key in self._answered:
                    del self._answered[key]  # a looped replay sends the same frame again
                    return True
            idle()
            self.scan()


class Lockstep:
    """Steps replay on one camera topic; reports each frame that got no answer in time on `report`."""

    def __init__(self, gate: OutputGate, topic: str, timeout: float, stop: threading.Event,
                 report: Callable[[str], None]) -> None:
        self.gate = gate
        self.topic = topic
        self.timeout = timeout
        self.stop = stop
        self.report = report
        self.frames = 0
        self.timed_out = 0
        self._t0_ns: Optional[int] = None

    def after_publishing(self, cdr: bytes, idle: Callable[[], None]) -> None:
        key = header_key(cdr)
        self.frames += 1
        if self._t0_ns is None:
            self._t0_ns = key[0]
        if self.gate.wait_for(key, self.timeout, self.stop, idle) or self.stop.is_set():
            return
        self.timed_out += 1
        sec, nanosec = divmod(key[0], 1_000_000_000)
        self.report(f"frame {self.frames} on {self.topic} (t={(key[0] - self._t0_ns) / 1e9:.3f} s, stamp "
                    f"{sec}.{nanosec:09d}, frame_id '{key[1]}'): no output within --frame-timeout "
                    f"{self.timeout:g} s; going on with the next frame")
