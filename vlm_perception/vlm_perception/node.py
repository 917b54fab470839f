"""vlm_perception_node: the ROS shell around the engine.

Threading: three mutually exclusive callback groups (camera inputs: image,
depth, camera_info; the standing-query timer; the query service) on a
three-thread executor, so camera callbacks always have a thread of their own
and never wait behind inference. Service calls are served one at a time
(inference is serialised anyway); further requests wait in the service's
queue and are all answered.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

import numpy as np
import rclpy
import yaml
from geometry_msgs.msg import PoseArray, PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vlm_perception_msgs.msg import GraspTargetArray, ObjectPresenceArray
from vlm_perception_msgs.srv import QueryScene

from . import images
from .backends import create_backend
from .depth_grasps import DepthGrasper
from .engine import PerceptionEngine, SceneResult
from .errors import BackendLoadError, ConfigurationError, VlmPerceptionError
from .frames import Frame, LatestFrame, stamp_to_ns
from .grasping import no_pose
from .malloc_tuning import keep_frame_buffers_in_heap
from .node_params import CHOICES, PARAMS, ParamSpec
from .queries import normalize_phrases, parse_query
from .ros_messages import pose_outputs, scene_msgs
from .target_frame import TargetFrameTransformer
from .throttle import ProblemThrottle

DEFAULT_CAMERA = "default"
WARN_PERIOD_S = 5.0
# Deep enough that a burst of clients is queued rather than dropped while one call runs.
SERVICE_QUEUE_DEPTH = 100


class VlmPerceptionNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("vlm_perception", **kwargs)
        for spec in PARAMS:
            self._declare(spec)
        p = {spec.name: self.get_parameter(spec.name).value for spec in PARAMS}
        for name, allowed in CHOICES.items():
            if p[name] not in allowed:
                raise ConfigurationError(f"parameter {name}='{p[name]}' is not one of {', '.join(allowed)}")

        self._backend_name: str = p["backend"]
        self._engine = PerceptionEngine(create_backend(self._backend_name, self._backend_options(p)),
                                        self._backend_name)
        self._threshold: float = p["threshold"]
        self._queries: list[str] = normalize_phrases(list(p["queries"]))
        self._max_image_age: float = p["max_image_age"]
        self._grasp_settings = {name: p[name] for name in ("sync_slop", "depth_scale", "grasp_margin")}
        self._frame = LatestFrame()
        self._warnings = ProblemThrottle(self.get_logger().warning, WARN_PERIOD_S)
        self._last_rejection = ""  # why the last incoming frame was dropped, for service errors
        self._last_standing_seq = 0

        image_qos = qos_profile_sensor_data if p["image_qos"] == "sensor_data" else QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        image_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        if p["image_transport"] == "compressed":
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, image_qos, callback_group=image_group)
        else:
            self._image_sub = self.create_subscription(
                Image, "image", self._on_image, image_qos, callback_group=image_group)

        depth_sub = self.create_subscription(Image, "depth", self._on_depth, image_qos, callback_group=image_group)
        info_sub = self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data, callback_group=image_group)
        self._grasper = DepthGrasper(depth_sub.topic_name, info_sub.topic_name)

        self._presence_pub = self.create_publisher(ObjectPresenceArray, "~/presence", 10)
        self._targets_pub = self.create_publisher(GraspTargetArray, "~/grasp_targets", 10)
        self._poses_pub = self.create_publisher(PoseArray, "~/grasp_poses", 10)
        self._pose_pub = self.create_publisher(PoseStamped, "~/grasp_pose", 10)
        self._to_target = None
        if p["target_frame"]:
            self._to_target = TargetFrameTransformer(self, p["target_frame"])
            self._target_poses_pub = self.create_publisher(PoseArray, "~/grasp_poses_in_target", 10)
            self._target_pose_pub = self.create_publisher(PoseStamped, "~/grasp_pose_in_target", 10)
        self._service = self.create_service(
            QueryScene, "~/query", self._on_query,
            qos_profile=QoSProfile(depth=SERVICE_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE),
            callback_group=MutuallyExclusiveCallbackGroup())
        self._timer = None
        self._set_rate(p["rate_hz"])
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"ready: backend '{self._backend_name}', listening on {self._image_sub.topic_name}, "
            f"service {self.get_fully_qualified_name()}/query, standing queries {self._queries or 'none'}")

    # --- configuration -------------------------------------------------------------

    def _declare(self, spec: ParamSpec) -> None:
        if spec.default == []:
            # rclpy infers an empty list as a byte array; declare the type, then the value.
            self.declare_parameter(spec.name, spec.type, spec.descriptor())
            if self.get_parameter_or(spec.name, None).type_ == Parameter.Type.NOT_SET:
                self.set_parameters([Parameter(spec.name, spec.type, [])])
        else:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())

    @staticmethod
    def _backend_options(p: dict[str, Any]) -> dict[str, Any]:
        options = {"model": p["model"], "model_path": p["model_path"], "device": p["device"]}
        if p["backend_options"].strip():
            try:
                extra = yaml.safe_load(p["backend_options"])
            except yaml.YAMLError as exc:
                raise ConfigurationError(f"backend_options is not valid YAML: {exc}") from exc
            if not isinstance(extra, dict):
                raise ConfigurationError(
                    f"backend_options must be a YAML mapping like '{{nms_iou: 0.5}}', got {p['backend_options']!r}")
            options.update(extra)
        return options

    def _set_rate(self, rate_hz: float) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if rate_hz > 0.0:
            self._timer = self.create_timer(1.0 / rate_hz, self._on_timer, callback_group=self._timer_group)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        # Ranges and read-only flags are enforced by the descriptors; apply what changed.
        for param in params:
            if param.name == "queries":
                self._queries = normalize_phrases(list(param.value or []))
            elif param.name == "threshold":
                self._threshold = float(param.value)
            elif param.name == "max_image_age":
                self._max_image_age = float(param.value)
            elif param.name == "rate_hz":
                self._set_rate(float(param.value))
            elif param.name in self._grasp_settings:
                self._grasp_settings = dict(self._grasp_settings, **{param.name: float(param.value)})
        return SetParametersResult(successful=True)

    # --- images (cheap: store only) --------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        try:
            images.check_image_msg(msg)
        except VlmPerceptionError as exc:
            self._reject_frame(str(exc))
            return
        self._store(msg.header, lambda: images.image_msg_to_rgb8(msg))

    def _on_compressed(self, msg: CompressedImage) -> None:
        # Decoded here, not lazily, so a corrupt frame never replaces the last good one.
        try:
            rgb = images.compressed_msg_to_rgb8(msg)
        except VlmPerceptionError as exc:
            self._reject_frame(str(exc))
            return
        self._store(msg.header, lambda: rgb)

    def _store(self, header: Any, convert: Any) -> None:
        self._frame.put(header, stamp_to_ns(header.stamp), self.get_clock().now().nanoseconds, convert)

    def _on_depth(self, msg: Image) -> None:
        try:
            self._grasper.put_depth(stamp_to_ns(msg.header.stamp), msg)
        except VlmPerceptionError as exc:
            self._warnings.warn("depth", f"dropped a depth frame on {self._grasper.depth_topic}: {exc}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._grasper.put_camera_info(msg)
        except VlmPerceptionError as exc:
            self._warnings.warn("camera_info", f"ignored camera_info on {self._grasper.info_topic}: {exc}")

    def _reject_frame(self, reason: str) -> None:
        self._last_rejection = reason
        self._warnings.warn("image", f"dropped a frame on {self._image_sub.topic_name}: {reason}")

    # --- standing queries ------------------------------------------------------------

    def _on_timer(self) -> None:
        queries = self._queries
        if not queries or self._frame.seq == self._last_standing_seq:
            return
        try:
            frame = self._fresh_frame()
            self._last_standing_seq = frame.seq
            self._evaluate(frame.header, frame.rgb, queries, self._threshold, want_grasps=True)
        except VlmPerceptionError as exc:
            self._warnings.warn("standing", f"standing queries skipped: {exc}")

    def _evaluate(self, header: Any, rgb: np.ndarray, phrases: list[str], threshold: float,
                  want_grasps: bool) -> tuple[SceneResult, ObjectPresenceArray, GraspTargetArray]:
        """Run the backend, add 3D grasps, publish every output; returns what was published."""
        result = self._engine.evaluate(rgb, phrases, threshold)
        if want_grasps:
            settings = self._grasp_settings
            grasps = self._grasper.grasps(
                stamp_to_ns(header.stamp), rgb.shape[:2], [t.box for t in result.targets],
                settings["sync_slop"], settings["depth_scale"], settings["grasp_margin"])
        else:
            grasps = [no_pose("3D pose not requested (want_grasps is false)")] * len(result.targets)
        presence, targets = scene_msgs(header, result, grasps, self._backend_name)
        self._presence_pub.publish(presence)
        self._targets_pub.publish(targets)
        poses = pose_outputs(targets)
        if poses is not None:
            self._poses_pub.publish(poses[0])
            self._pose_pub.publish(poses[1])
            if self._to_target is not None:
                self._publish_in_target_frame(poses[0])
        return result, presence, targets

    def _publish_in_target_frame(self, poses: PoseArray) -> None:
        try:
            moved = self._to_target.transform(poses)
        except VlmPerceptionError as exc:
            self._warnings.warn("target_frame", str(exc))
            return
        self._target_poses_pub.publish(moved)
        self._target_pose_pub.publish(PoseStamped(header=moved.header, pose=moved.poses[0]))

    # --- the query service -----------------------------------------------------------

    def _on_query(self, request: QueryScene.Request, response: QueryScene.Response) -> QueryScene.Response:
        try:
            self._answer(request, response)
            response.success = True
        except VlmPerceptionError as exc:
            response.success = False
            response.message = str(exc)
            self.get_logger().warning(f"query {request.query[:80]!r} failed: {exc}")
        return response

    def _answer(self, request: QueryScene.Request, response: QueryScene.Response) -> None:
        if request.camera not in ("", DEFAULT_CAMERA):
            raise VlmPerceptionError(
                f"unknown camera '{request.camera}'; this node has one camera: leave `camera` empty "
                f"or use '{DEFAULT_CAMERA}'")
        parsed = parse_query(request.query)
        threshold = self._request_threshold(request.threshold)
        header, rgb = self._request_image(request.image)
        response.image_stamp = header.stamp
        if parsed.open_question:
            if not self._engine.answers_questions:
                raise VlmPerceptionError(
                    f"backend '{self._backend_name}' scores named objects and cannot answer "
                    f"'{parsed.text}'; ask e.g. 'is there a cup?' or 'cup, bottle'")
            response.answer, response.inference_ms = self._engine.answer(rgb, parsed.text)
            return
        result, presence, targets = self._evaluate(header, rgb, parsed.phrases, threshold, request.want_grasps)
        response.answer = result.answer
        response.presence = presence.results
        response.targets = targets.targets
        response.inference_ms = float(result.inference_ms)

    def _request_threshold(self, requested: float) -> float:
        if requested <= 0.0:
            return self._threshold
        if requested > 1.0 or not np.isfinite(requested):
            raise VlmPerceptionError(f"threshold {requested} is outside (0, 1]; use <= 0 for the node's default")
        return float(requested)

    def _request_image(self, image: Image) -> tuple[Any, np.ndarray]:
        if len(image.data) > 0:
            try:
                return image.header, images.image_msg_to_rgb8(image)
            except VlmPerceptionError as exc:
                raise VlmPerceptionError(f"request image: {exc}") from exc
        frame = self._fresh_frame()
        return frame.header, frame.rgb

    def _fresh_frame(self) -> Frame:
        topic = self._image_sub.topic_name
        try:
            frame: Optional[Frame] = self._frame.get()
        except VlmPerceptionError as exc:
            raise VlmPerceptionError(f"latest frame on {topic}: {exc}") from exc
        if frame is None:
            why = f" (incoming frames were dropped: {self._last_rejection})" if self._last_rejection else ""
            raise VlmPerceptionError(
                f"no frame received on {topic} yet{why}; check the camera topic (remap `image`) "
                f"and that image_qos matches the publisher, or send an image in the request")
        max_age = self._max_image_age
        if max_age > 0.0:
            reference_ns = frame.stamp_ns or frame.received_ns
            age = (self.get_clock().now().nanoseconds - reference_ns) / 1e9
            if age > max_age:
                raise VlmPerceptionError(
                    f"latest frame on {topic} is {age:.2f} s old, over max_image_age {max_age:g} s; "
                    "check that the camera is still publishing (for replayed bags set use_sim_time)")
        return frame


def main(args: Optional[list[str]] = None) -> int:
    # Idle OpenMP workers of a CPU model would otherwise spin for milliseconds after
    # every inference, taking the cores DDS and the camera driver need (set before torch loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    keep_frame_buffers_in_heap()
    rclpy.init(args=args)
    logger = rclpy.logging.get_logger("vlm_perception")
    node = None
    try:
        node = VlmPerceptionNode()
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (BackendLoadError, ConfigurationError) as exc:
        logger.error(f"cannot start: {exc}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
