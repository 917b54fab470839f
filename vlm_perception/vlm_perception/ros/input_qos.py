"""The reliability of the camera subscriptions: fixed by image_qos, or following the publishers (auto).

A best-effort subscription takes every publisher, but a reliable publisher's
large frames then travel without resends and between processes most of their
fragments are lost; a reliable subscription never matches a best-effort
publisher. So `auto` (as rosbag2 and `ros2 topic echo` adapt) subscribes
reliable when every publisher on the topic is reliable and best effort
otherwise, at activation and again whenever that changes. With no publisher
yet an auto input waits unsubscribed: the first one decides.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

AUTO = "auto"
MODES = (AUTO, "sensor_data", "reliable")
# sensor_data's depth: the node keeps only the newest frame, but a reader queue of one would lose
# every frame that arrives while the previous one's callback is still running.
RELIABLE_INPUT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_profile_sensor_data.depth,
                            reliability=ReliabilityPolicy.RELIABLE)


def offered_reliability(publishers: Sequence[Any]) -> Optional[ReliabilityPolicy]:
    """RELIABLE when every publisher (rclpy TopicEndpointInfo) is reliable, BEST_EFFORT when any is
    not (or does not say); None without publishers."""
    if not publishers:
        return None
    if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def input_profile(reliability: ReliabilityPolicy) -> QoSProfile:
    return RELIABLE_INPUT if reliability == ReliabilityPolicy.RELIABLE else qos_profile_sensor_data


def reliability_name(reliability: Any) -> str:
    return {ReliabilityPolicy.RELIABLE: "reliable", ReliabilityPolicy.BEST_EFFORT: "best effort"}.get(
        reliability, "unknown")


class InputQos:
    """Subscribes each camera's image and depth inputs with the reliability image_qos asks for."""

    def __init__(self, node: Any, mode: str) -> None:
        self._node = node
        self.mode = mode
        self._subscribed: dict[tuple[str, str], ReliabilityPolicy] = {}  # (camera, kind) -> reliability
        self._changes: dict[tuple[str, str], int] = {}  # (camera, kind) -> subscriptions made so far

    def subscribe(self, channels: Sequence[Any]) -> None:
        """At activation: fixed modes subscribe every input now; auto those with publishers."""
        self._subscribed = {}
        if self.mode != AUTO:
            fixed = ReliabilityPolicy.RELIABLE if self.mode == "reliable" else ReliabilityPolicy.BEST_EFFORT
            for channel in channels:
                for kind in channel.input_topics():
                    self._set(channel, kind, fixed)
            return
        self.follow(channels)
        for channel in channels:
            if (channel.name, "image") not in self._subscribed:
                self._node.get_logger().info(
                    f"camera '{channel.name}': image_qos auto: nothing publishes on {channel.image_topic} yet; "
                    "subscribing when a publisher appears, with the reliability it offers")

    def follow(self, channels: Sequence[Any]) -> None:
        """Auto only: resubscribe every input whose publishers now offer another reliability."""
        if self.mode != AUTO:
            return
        for channel in channels:
            for kind, topic in channel.input_topics().items():
                publishers = self._node.get_publishers_info_by_topic(topic)
                offered = offered_reliability(publishers)
                # No publisher left: keep the subscription, the next one most likely offers the same.
                if offered is None or offered == self._subscribed.get((channel.name, kind)):
                    continue
                self._set(channel, kind, offered)
                self._node.get_logger().info(
                    f"camera '{channel.name}': image_qos auto: subscribed to {topic} "
                    f"{reliability_name(offered)}, as its publisher(s) offer: "
                    + ", ".join(f"{p.node_name} {reliability_name(p.qos_profile.reliability)}" for p in publishers))

    def _set(self, channel: Any, kind: str, reliability: ReliabilityPolicy) -> None:
        channel.set_input_qos(kind, input_profile(reliability))
        key = (channel.name, kind)
        self._subscribed[key] = reliability
        self._changes[key] = self._changes.get(key, 0) + 1

    def changes(self, channel: Any, kind: str = "image") -> int:
        """How many subscriptions input `kind` of `channel` has had: a new one starts afresh."""
        return self._changes.get((channel.name, kind), 0)

    def reliability(self, channel: Any, kind: str = "image") -> Optional[ReliabilityPolicy]:
        """What input `kind` of `channel` is subscribed with; None while not subscribed."""
        return self._subscribed.get((channel.name, kind))
