"""One camera's inputs, latest frame, depth pairing and outputs (ROS shell).

The node owns one channel per camera. With no `cameras` parameter there is a
single channel on the plain topics (image, depth, camera_info -> ~/presence
...); each named camera reads <name>/image ... and publishes under ~/<name>/.
Publishers are lifecycle publishers made on configure; subscriptions exist
only while the node is active.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.callback_groups import CallbackGroup
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vlm_perception_msgs.msg import GraspTargetArray, ObjectPresenceArray

from ..core import images
from .depth_grasps import DepthGrasper
from ..core.errors import VlmPerceptionError
from ..core.frames import Frame, LatestFrame, stamp_to_ns
from ..core.health import CameraHealth
from .ros_messages import Detection2DArray
from ..core.throttle import ProblemThrottle

OUTPUT_DEPTH = 10
# Color frames kept unconverted while depth comes, so one whose depth came late can still be
# evaluated with it (core.pairing): covers depth up to ~0.25 s late at 30 Hz. Without depth: 1.
COLOR_HISTORY = 8


class CameraChannel:
    def __init__(self, node: Any, name: str, prefix: str, output_prefix: str, compressed: bool,
                 warnings: ProblemThrottle, wants_frames: Callable[[], bool]) -> None:
        """`prefix` for input topics ("" or "front/"), `output_prefix` for outputs ("~/" or "~/front/");
        `wants_frames`: whether standing queries run, i.e. a replaced frame counts as skipped."""
        self.name = name
        self._node = node
        self._compressed = compressed
        self._warnings = warnings
        self.image_topic = node.resolve_topic_name(prefix + ("image/compressed" if compressed else "image"))
        self._depth_topic = node.resolve_topic_name(prefix + "depth")
        self._info_topic = node.resolve_topic_name(prefix + "camera_info")
        self.frame = LatestFrame(COLOR_HISTORY)
        self.grasper = DepthGrasper(self._depth_topic, self._info_topic)
        self.health = CameraHealth(name, self.image_topic)
        self.debug_images = 0  # published, i.e. drawn: only while someone subscribes
        self._wants_frames = wants_frames
        self.last_rejection = ""  # why the last incoming frame was dropped, for service errors
        self.last_standing_seq = 0
        self._subscriptions: dict[str, Any] = {}  # by input kind: image, depth, camera_info
        self._group: Optional[CallbackGroup] = None
        self._event_callbacks: Any = None

        publisher = node.create_lifecycle_publisher
        self.presence_pub = publisher(ObjectPresenceArray, output_prefix + "presence", OUTPUT_DEPTH)
        self.targets_pub = publisher(GraspTargetArray, output_prefix + "grasp_targets", OUTPUT_DEPTH)
        self.poses_pub = publisher(PoseArray, output_prefix + "grasp_poses", OUTPUT_DEPTH)
        self.pose_pub = publisher(PoseStamped, output_prefix + "grasp_pose", OUTPUT_DEPTH)
        self.debug_image_pub = publisher(Image, output_prefix + "debug_image", 1)
        self.detections_pub = (publisher(Detection2DArray, output_prefix + "detections", OUTPUT_DEPTH)
                               if Detection2DArray is not None else None)
        self.target_poses_pub: Optional[Any] = None
        self.target_pose_pub: Optional[Any] = None

    def add_target_frame_outputs(self, output_prefix: str) -> None:
        publisher = self._node.create_lifecycle_publisher
        self.target_poses_pub = publisher(PoseArray, output_prefix + "grasp_poses_in_target", OUTPUT_DEPTH)
        self.target_pose_pub = publisher(PoseStamped, output_prefix + "grasp_pose_in_target", OUTPUT_DEPTH)

    def publishers(self) -> list[Any]:
        return [p for p in (self.presence_pub, self.targets_pub, self.poses_pub, self.pose_pub,
                            self.debug_image_pub, self.detections_pub, self.target_poses_pub,
                            self.target_pose_pub) if p is not None]

    # --- subscriptions (active state only) ----------------------------------------------

    def input_topics(self) -> dict[str, str]:
        """The inputs whose subscription QoS follows image_qos, by kind: image and depth."""
        return {"image": self.image_topic, "depth": self._depth_topic}

    def start_inputs(self, group: CallbackGroup, event_callbacks: Any) -> None:
        """Subscribe camera_info (best effort takes either publisher QoS) and keep what the image and
        depth subscriptions are made with; those come with set_input_qos."""
        self._group = group
        self._event_callbacks = event_callbacks
        self._subscriptions["camera_info"] = self._node.create_subscription(
            CameraInfo, self._info_topic, self._on_camera_info, qos_profile_sensor_data, callback_group=group)

    def set_input_qos(self, kind: str, qos: QoSProfile) -> None:
        """Subscribe input `kind` ("image" or "depth") with `qos`, replacing its subscription."""
        node = self._node
        old = self._subscriptions.pop(kind, None)
        if old is not None:
            node.destroy_subscription(old)
        if kind == "image":
            image_type, on_image = ((CompressedImage, self._on_compressed) if self._compressed
                                    else (Image, self._on_image))
            self._subscriptions[kind] = node.create_subscription(
                image_type, self.image_topic, on_image, qos, callback_group=self._group,
                event_callbacks=self._event_callbacks)
        else:
            self._subscriptions[kind] = node.create_subscription(
                Image, self._depth_topic, self._on_depth, qos, callback_group=self._group)

    def unsubscribe(self) -> None:
        for subscription in self._subscriptions.values():
            self._node.destroy_subscription(subscription)
        self._subscriptions = {}

    # --- callbacks: cheap, store only ---------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        try:
            images.check_image_msg(msg)
        except VlmPerceptionError as exc:
            self._reject(str(exc))
            return
        self._store(msg.header, lambda: images.image_msg_to_rgb8(msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        # Decoded here, not lazily, so a corrupt frame never replaces the last good one.
        try:
            rgb = images.compressed_msg_to_rgb8(msg)
        except VlmPerceptionError as exc:
            self._reject(str(exc))
            return
        self._store(msg.header, lambda: rgb)

    def _store(self, header: Any, convert: Callable[[], Any]) -> None:
        now_ns = self._node.get_clock().now().nanoseconds
        keep = COLOR_HISTORY if self.grasper.depth_is_live() else 1
        self.frame.put(header, stamp_to_ns(header.stamp), now_ns, convert, keep)
        self.health.accepted(now_ns, self._wants_frames(), keep)

    def _reject(self, reason: str) -> None:
        self.last_rejection = reason
        self.health.rejected(self._node.get_clock().now().nanoseconds, reason)
        self._warnings.warn(f"image:{self.name}", f"dropped a frame on {self.image_topic}: {reason}")

    def _on_depth(self, msg: Image) -> None:
        try:
            self.grasper.put_depth(stamp_to_ns(msg.header.stamp), msg)
        except VlmPerceptionError as exc:
            self._warnings.warn(f"depth:{self.name}", f"dropped a depth frame on {self._depth_topic}: {exc}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.grasper.put_camera_info(msg)
        except VlmPerceptionError as exc:
            self._warnings.warn(f"camera_info:{self.name}", f"ignored camera_info on {self._info_topic}: {exc}")

    # --- frames for inference -----------------------------------------------------------

    def frame_with_depth(self, max_age_s: float, sync_slop_s: float) -> tuple[Frame, bool]:
        """The frame to evaluate with depth (core.pairing: may wait up to sync_slop for its depth) and
        whether that wait ran out; VlmPerceptionError as fresh_frame."""
        pick = self.grasper.pick_color(self.frame, sync_slop_s)
        now_ns = self._node.get_clock().now().nanoseconds
        return self.fresh_frame(now_ns, max_age_s, pick.seq if pick else None), bool(pick and pick.wait_ran_out)

    def fresh_frame(self, now_ns: int, max_age_s: float, seq: Optional[int] = None) -> Frame:
        """Frame `seq` (default, or once it left the history: the latest), or VlmPerceptionError saying
        why there is none fit to answer from."""
        topic = self.image_topic
        try:
            frame: Optional[Frame] = (self.frame.get(seq) if seq is not None else None) or self.frame.get()
        except VlmPerceptionError as exc:
            raise VlmPerceptionError(f"latest frame on {topic}: {exc}") from exc
        if frame is None:
            why = f" (incoming frames were dropped: {self.last_rejection})" if self.last_rejection else ""
            raise VlmPerceptionError(
                f"no frame received on {topic} yet{why}; check the camera topic (remap it) "
                f"and that image_qos matches the publisher, or send an image in the request")
        if max_age_s > 0.0:
            age = (now_ns - (frame.stamp_ns or frame.received_ns)) / 1e9
            if age > max_age_s:
                raise VlmPerceptionError(
                    f"latest frame on {topic} is {age:.2f} s old, over max_image_age {max_age_s:g} s; "
                    "check that the camera is still publishing (for replayed bags set use_sim_time)")
        self.health.evaluated(frame.seq)
        return frame
