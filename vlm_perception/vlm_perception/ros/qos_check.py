"""Says why no camera frames arrive: QoS, large frames lost between processes, or no publisher.

The most common "the node prints nothing" reports: a camera publishes best
effort while the subscription asks for reliable, and DDS silently never
connects them; or large raw frames sent best effort, whose fragments are lost
between processes; or a topic nobody publishes on. Two checks name the fix:
the middleware's incompatible-QoS event, and, all the time the node is
active, a look at the topic's publishers whenever a camera has been quiet for
a while, whether frames never came or stopped coming. The explanation goes to
/diagnostics (CameraHealth.diagnosis) and, throttled, to the log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from rclpy.qos import QoSPolicyKind, ReliabilityPolicy

from ..core.throttle import ProblemThrottle
from .dds_profile import PROFILE_VARIABLES, large_image_profile
from .input_qos import AUTO, InputQos

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

# A camera quiet this long gets its explanation in /diagnostics...
QUIET_S = 1.0
# ...and this long a warning in the log, repeated at most every LOG_PERIOD_S while nothing changes.
WARN_AFTER_S = 5.0
LOG_PERIOD_S = 30.0


@dataclass
class _Quiet:
    received: int  # the camera's frames received (accepted or rejected) when last seen to change
    since_s: float  # steady time of that change, or of activation or of the image subscription's change
    subscription: int  # InputQos.changes of the image input then
    had_frames: bool  # a frame arrived through this subscription
    senders: frozenset = frozenset()  # the topic's publishers (endpoint gids) when the last frame came


class QosChecker:
    def __init__(self, node: Any, input_qos: InputQos, compressed: bool) -> None:
        self._node = node
        self._input_qos = input_qos
        self._compressed = compressed
        self._warnings = ProblemThrottle(node.get_logger().warning, LOG_PERIOD_S)
        self._quiet: dict[str, _Quiet] = {}

    def event_callbacks(self, channel: Any) -> SubscriptionEventCallbacks:
        """Callbacks for a camera's image subscription that warn on an incompatible publisher."""
        def on_incompatible(info: Any) -> None:
            policy = _policy_name(info.last_policy_kind)
            self._node.get_logger().warning(
                f"camera '{channel.name}': a publisher on {channel.image_topic} offers a QoS incompatible with "
                f"this node's subscription ({policy} policy), so its frames never arrive; "
                f"{self._advice(policy)}")
        return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)

    def start(self, channels: Sequence[Any], now_s: float) -> None:
        """At activation: every camera is quiet from `now_s` (steady seconds) until a frame arrives."""
        self._quiet = {c.name: self._afresh(c, now_s) for c in channels}

    def check(self, channels: Sequence[Any], now_s: float) -> None:
        """Diagnose every camera that has received nothing for QUIET_S; called periodically."""
        for channel in channels:
            quiet = self._quiet.get(channel.name)
            if quiet is None or quiet.subscription != self._input_qos.changes(channel):
                # A new subscription (image_qos auto followed the publishers) gets its own time.
                quiet = self._quiet[channel.name] = self._afresh(channel, now_s)
            if channel.health.received != quiet.received:
                self._quiet[channel.name] = _Quiet(channel.health.received, now_s, quiet.subscription, True,
                                                   _gids(self._node.get_publishers_info_by_topic(channel.image_topic)))
                channel.health.set_diagnosis("")
                continue
            quiet_s = now_s - quiet.since_s
            if quiet_s < QUIET_S:
                continue
            publishers = self._node.get_publishers_info_by_topic(channel.image_topic)
            # A publisher that joined since the last frame has sent nothing yet: judge it as new.
            had_frames = quiet.had_frames and _gids(publishers) <= quiet.senders
            why = self.diagnose(channel, had_frames, publishers)
            channel.health.set_diagnosis(why)
            if quiet_s >= WARN_AFTER_S:
                after = " after frames had arrived" if had_frames else ""
                self._warnings.warn(channel.name, f"camera '{channel.name}': no frame on {channel.image_topic} "
                                                  f"for {quiet_s:.0f} s{after}: {why}")

    def _afresh(self, channel: Any, now_s: float) -> _Quiet:
        return _Quiet(channel.health.received, now_s, self._input_qos.changes(channel), False)

    def diagnose(self, channel: Any, had_frames: bool, publishers: Optional[Sequence[Any]] = None) -> str:
        """Why `channel` receives nothing, as far as the graph tells, and what to change;
        `had_frames`: frames did arrive through the current subscription from these publishers, then
        stopped. `publishers`: the topic's (rclpy TopicEndpointInfo), looked up when not given."""
        topic = channel.image_topic
        if publishers is None:
            publishers = self._node.get_publishers_info_by_topic(topic)
        if not publishers:
            if had_frames:
                return "its publisher(s) left the topic; check that the camera driver still runs"
            return f"nothing publishes on it; remap the camera's image topic to {topic}"
        names = ", ".join(p.node_name for p in publishers)
        best_effort = [p.node_name for p in publishers if p.qos_profile.reliability != ReliabilityPolicy.RELIABLE]
        if had_frames:
            return (f"{len(publishers)} publisher(s) ({names}) are still there but their frames stopped; "
                    f"check that the camera is still streaming (ros2 topic hz {topic})"
                    + ("; best-effort frames too large for shared memory are lost too (see README "
                       "'Large images over DDS')" if best_effort else ""))
        subscribed = self._input_qos.reliability(channel)
        fixed = self._input_qos.mode != AUTO  # auto resubscribes when the offer changes
        if fixed and subscribed == ReliabilityPolicy.RELIABLE and best_effort:
            return (f"publisher(s) {', '.join(best_effort)} offer best effort, which image_qos "
                    f"'{self._input_qos.mode}' (reliable) never receives; set the parameter image_qos to auto")
        if fixed and subscribed == ReliabilityPolicy.BEST_EFFORT and not best_effort:
            return ("its publisher(s) offer reliable but image_qos 'sensor_data' subscribes best effort, which "
                    "loses large frames between processes; set the parameter image_qos to auto")
        if best_effort:
            return (f"publisher(s) {', '.join(best_effort)} send best effort, and raw frames larger than Fast DDS's "
                    "shared-memory segment are lost in fragments between processes; load the large-image "
                    f"profile in the camera driver's process ({PROFILE_VARIABLES[0]}={_profile_path()}, "
                    "see README 'Large images over DDS') or make the driver publish reliable"
                    + ("" if self._compressed else ", or use image_transport compressed"))
        return (f"{len(publishers)} reliable publisher(s) ({names}) are connected but send nothing; "
                f"check that the camera is streaming (ros2 topic hz {topic})")

    def _advice(self, policy: str) -> str:
        if policy == "RELIABILITY" and self._input_qos.mode != AUTO:
            return "set the parameter image_qos to auto, which follows the camera's reliability"
        return f"the camera's publisher must offer at least what image_qos '{self._input_qos.mode}' asks for"


def _gids(publishers: Sequence[Any]) -> frozenset:
    return frozenset(tuple(p.endpoint_gid) for p in publishers)


def _profile_path() -> str:
    path = large_image_profile()
    return str(path) if path is not None else "<share>/vlm_perception/config/fastdds_large_images.xml"


def _policy_name(kind: Any) -> str:
    try:
        return QoSPolicyKind(kind).name
    except ValueError:
        return str(kind)
