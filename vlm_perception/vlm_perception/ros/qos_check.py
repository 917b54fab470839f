"""Says why no camera frames arrive when the cause is QoS or a missing publisher.

The most common "the node prints nothing" report: a camera publishes best
effort while the subscription asks for reliable, and DDS silently never
connects them. Two checks name the parameter to change: the middleware's
incompatible-QoS event, and a look at the topic's publishers when the first
frame has not arrived a few seconds after activation.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from rclpy.clock import Clock, ClockType
from rclpy.qos import QoSPolicyKind, ReliabilityPolicy

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

FIRST_FRAME_TIMEOUT_S = 5.0


class QosChecker:
    def __init__(self, node: Any, image_qos: str, first_frame_timeout_s: float = FIRST_FRAME_TIMEOUT_S) -> None:
        self._node = node
        self._image_qos = image_qos  # the parameter's value: sensor_data or reliable
        self._timeout_s = first_frame_timeout_s
        self._timer: Optional[Any] = None

    def event_callbacks(self, channel: Any) -> SubscriptionEventCallbacks:
        """Callbacks for a camera's image subscription that warn on an incompatible publisher."""
        def on_incompatible(info: Any) -> None:
            policy = _policy_name(info.last_policy_kind)
            self._node.get_logger().warning(
                f"camera '{channel.name}': a publisher on {channel.image_topic} offers a QoS incompatible with "
                f"this node's subscription ({policy} policy), so its frames never arrive; "
                f"{self._advice(policy)}")
        return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)

    def watch_first_frames(self, channels: Sequence[Any]) -> None:
        """Once, after the timeout: diagnose every camera that has not received a frame."""
        self.stop()

        def check() -> None:
            self.stop()
            for channel in channels:
                if channel.frame.seq == 0:
                    self._node.get_logger().warning(self.diagnose(channel))
        # Steady time: under use_sim_time the node's clock jumps when /clock starts.
        self._timer = self._node.create_timer(self._timeout_s, check, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def stop(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None

    def diagnose(self, channel: Any) -> str:
        """Why `channel` has no frame yet, as far as the graph can tell."""
        topic = channel.image_topic
        head = f"camera '{channel.name}': no frame on {topic} {self._timeout_s:g} s after activation"
        publishers = self._node.get_publishers_info_by_topic(topic)
        if not publishers:
            return f"{head}: nothing publishes on it; remap the camera's image topic to {topic}"
        best_effort = [p.node_name for p in publishers
                       if p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        if self._image_qos == "reliable" and best_effort:
            return (f"{head}: publisher(s) {', '.join(best_effort)} offer best-effort reliability, incompatible with "
                    "image_qos 'reliable'; set the parameter image_qos to sensor_data")
        return (f"{head}, though {len(publishers)} publisher(s) exist; check that the camera is streaming, and for "
                "large images the shared-memory transport limit (see config/fastdds_large_images.xml in README)")

    def _advice(self, policy: str) -> str:
        if policy == "RELIABILITY" and self._image_qos == "reliable":
            return "set the parameter image_qos to sensor_data (best effort) to match the camera"
        return f"the camera's publisher must offer at least what image_qos '{self._image_qos}' asks for"


def _policy_name(kind: Any) -> str:
    try:
        return QoSPolicyKind(kind).name
    except ValueError:
        return str(kind)
