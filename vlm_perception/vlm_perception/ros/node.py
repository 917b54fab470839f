"""vlm_perception_node: the ROS shell around the engine, as a lifecycle node.

Lifecycle: configure loads the model and makes the publishers, activate
subscribes to the cameras and starts the standing queries, deactivate stops
both, cleanup frees the model. The query service, /diagnostics and
~/standing_queries exist in every state. With autostart (the default) the node
configures and activates itself at start-up. The backend, its options and the
model are start-up-only parameters, so a configure after cleanup loads what
the node started with: no peer on the graph chooses code or files to load.

Threading: mutually exclusive callback groups for camera inputs, the
standing-query timer, the query service, and the rest (lifecycle transitions,
diagnostics, parameters), on one thread each, so camera callbacks never wait
behind inference. Inference and the transitions that tear down what it uses
take `_work_lock`, so deactivate/cleanup wait for the call in flight.
"""
from __future__ import annotations

import gc
import os
import re
import signal
import sys
import threading
import time
from typing import Any, Optional

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vlm_perception_msgs.msg import GraspTargetArray, ObjectPresenceArray, StandingQueries
from vlm_perception_msgs.srv import QueryScene

from ..core import images
from ..backends import create_backend
from .camera_channel import CameraChannel
from .debug_image import draw_detections
from .input_qos import InputQos
from ..core.engine import PerceptionEngine, SceneResult
from ..core.errors import BackendLoadError, ConfigurationError, VlmPerceptionError
from ..core.frames import stamp_to_ns
from ..core.grasping import no_pose
from ..core.health import LatencyStats, RateMeter, build_statuses, gpu_memory_mib
from .malloc_tuning import keep_frame_buffers_in_heap
from .node_params import CHOICES, PARAMS, STARTUP_ONLY_HOW, ParamSpec, live_value_problem
from .qos_check import QosChecker
from ..core.queries import normalize_phrases, parse_query
from .ros_messages import Detection2DArray, detection_array_msg, diagnostic_array_msg, pose_outputs, scene_msgs
from .target_frame import TargetFrameTransformer
from ..core.throttle import ProblemThrottle

DEFAULT_CAMERA = "default"
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # one topic-name token
WARN_PERIOD_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0
# How often the camera topics' publishers are looked at (image_qos auto, the no-frames diagnosis).
INPUT_WATCH_PERIOD_S = 0.5
# Keep every request: a burst from many clients queues (in arrival order) instead of overflowing a
# KEEP_LAST queue, whose dropped requests would leave their clients waiting forever.
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
STARTUP_ONLY = frozenset(spec.name for spec in PARAMS if spec.startup_only)
LIVE_PARAMS = ("threshold", "queries", "rate_hz", "max_image_age", "depth_scale", "sync_slop", "grasp_margin",
               "stale_frame_s", "latency_warn_ms")


class NotActiveError(VlmPerceptionError):
    """A service call outside the active lifecycle state."""


class VlmPerceptionNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("vlm_perception", **kwargs)
        for spec in PARAMS:
            self._declare(spec)
        self._live = {name: self.get_parameter(name).value for name in LIVE_PARAMS}
        self._live["queries"] = normalize_phrases(list(self._live["queries"]))
        for name, value in self._live.items():
            if live_value_problem(name, value):
                raise ConfigurationError(live_value_problem(name, value))
        self._warnings = ProblemThrottle(self.get_logger().warning, WARN_PERIOD_S)
        self._work_lock = threading.Lock()
        self._engine: Optional[PerceptionEngine] = None
        self._channels: dict[str, CameraChannel] = {}
        self._to_target: Optional[TargetFrameTransformer] = None
        self._input_qos: Optional[InputQos] = None
        self._qos_checker: Optional[QosChecker] = None
        self._input_watch = None
        self._active = False
        self._configure_error = ""
        self._round_robin = 0
        self._latency = LatencyStats()
        self._queries_per_s = RateMeter()
        self._standing_timer = None
        self._inputs_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

        self._standing_pub = self.create_publisher(StandingQueries, "~/standing_queries", LATCHED)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._guard_transitions()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        if self.get_parameter("autostart").value:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise BackendLoadError(self._configure_error)
            self.trigger_activate()
        else:
            self.get_logger().info(
                f"unconfigured, waiting for lifecycle transitions: "
                f"ros2 lifecycle set {self.get_fully_qualified_name()} configure")
        # Made last, so with autostart a client that sees the service finds the node active.
        self._service = self.create_service(
            QueryScene, "~/query", self._on_query,
            qos_profile=SERVICE_QOS,
            callback_group=MutuallyExclusiveCallbackGroup())

    # --- lifecycle -----------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = ""
        try:
            self._configure()
        except Exception as exc:  # rclpy drops an exception from a transition callback without a word
            self._configure_error = _reason(exc)
            self.get_logger().error(f"configure failed: {self._configure_error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        p = {spec.name: self.get_parameter(spec.name).value for spec in PARAMS if spec.on_configure}
        for name, allowed in CHOICES.items():
            if p[name] not in allowed:
                raise ConfigurationError(f"parameter {name}='{p[name]}' is not one of {', '.join(allowed)}")
        cameras = _camera_names(list(p["cameras"]))
        backend_name = p["backend"]
        self._engine = PerceptionEngine(create_backend(backend_name, _backend_options(p)), backend_name)
        compressed = p["image_transport"] == "compressed"
        if p["target_frame"]:
            self._to_target = TargetFrameTransformer(self, p["target_frame"])
        for name in cameras or [DEFAULT_CAMERA]:
            prefix = f"{name}/" if cameras else ""
            channel = CameraChannel(self, name, prefix, f"~/{prefix}", compressed, self._warnings,
                                    lambda: bool(self._live["queries"]) and self._live["rate_hz"] > 0.0)
            if self._to_target is not None:
                channel.add_target_frame_outputs(f"~/{prefix}")
            self._channels[name] = channel
        self._input_qos = InputQos(self, p["image_qos"])
        self._qos_checker = QosChecker(self, self._input_qos, compressed)
        if Detection2DArray is None:
            self.get_logger().info(
                "vision_msgs is not installed: ~/detections (vision_msgs/Detection2DArray) is not published; "
                "install ros-$ROS_DISTRO-vision-msgs to get it")
        self._publish_standing_queries()
        self.get_logger().info(
            f"configured: backend '{backend_name}' ({_run_summary(self._engine.backend)}), cameras "
            f"{', '.join(f'{c.name} ({c.image_topic})' for c in self._channels.values())}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._activate()
        except Exception as exc:  # as in on_configure: say why, and leave nothing half started
            self.get_logger().error(f"activate failed: {_reason(exc)}")
            self._stop_work()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def _activate(self) -> None:
        channels = list(self._channels.values())
        for channel in channels:
            channel.start_inputs(self._inputs_group, self._qos_checker.event_callbacks(channel))
        self._input_qos.subscribe(channels)
        self._qos_checker.start(channels, time.monotonic())
        # Steady time: under use_sim_time the node's clock stands still until /clock starts.
        self._input_watch = self.create_timer(INPUT_WATCH_PERIOD_S, self._watch_inputs,
                                              clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._set_rate(self._live["rate_hz"])
        self._active = True
        self.get_logger().info(
            f"active: service {self.get_fully_qualified_name()}/query, "
            f"standing queries {self._live['queries'] or 'none'}")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._work_lock:
            self._active = False
        self._stop_work()
        self.get_logger().info("inactive: camera subscriptions released, standing queries stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._work_lock:
            self._active = False
        self._stop_work()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _watch_inputs(self) -> None:
        """Follow the publishers' reliability (image_qos auto), then diagnose cameras without frames."""
        channels = list(self._channels.values())
        self._input_qos.follow(channels)
        self._qos_checker.check(channels, time.monotonic())

    def _stop_work(self) -> None:
        self._set_rate(0.0)
        if self._input_watch is not None:
            self.destroy_timer(self._input_watch)
            self._input_watch = None
        for channel in self._channels.values():
            channel.unsubscribe()

    def _release(self) -> None:
        """Drop the model, publishers and channels; frees GPU memory where CUDA was used."""
        with self._work_lock:
            for channel in self._channels.values():
                for publisher in channel.publishers():
                    self.destroy_lifecycle_publisher(publisher)
            self._channels = {}
            self._engine = None
            self._to_target = None
            self._input_qos = None
            self._qos_checker = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _guard_transitions(self) -> None:
        """Refuse a transition the current state does not allow, saying why, instead of raising."""
        service = self._service_change_state
        change_state = service.callback

        def guarded(request: Any, response: Any) -> Any:
            state = self._state_machine.current_state[1]
            allowed = {(t[0], t[1]) for t in self._state_machine.available_transitions}
            by_label = bool(request.transition.label)
            wanted = request.transition.label if by_label else str(request.transition.id)
            if not any((label if by_label else str(tid)) == wanted for tid, label in allowed):
                self.get_logger().warning(
                    f"transition '{wanted}' refused: not possible in state '{state}'; possible now: "
                    f"{', '.join(sorted(label for _, label in allowed)) or 'none'}")
                response.success = False
                return response
            response = change_state(request, response)
            if not response.success:
                self.get_logger().warning(
                    f"transition '{wanted}' failed in state '{state}'"
                    + (f": {self._configure_error}" if self._configure_error else ""))
            return response

        service.callback = guarded

    # --- parameters ----------------------------------------------------------------

    def _declare(self, spec: ParamSpec) -> None:
        if spec.default == []:
            # rclpy infers an empty list as a byte array; declare the type, then the value.
            self.declare_parameter(spec.name, spec.type, spec.descriptor())
            if self.get_parameter_or(spec.name, None).type_ == Parameter.Type.NOT_SET:
                self.set_parameters([Parameter(spec.name, spec.type, [])])
        else:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        # The parameter services call this. Start-up-only parameters are read_only, which rclpy
        # refuses with "Trying to set a read-only parameter"; say instead how to change them.
        refused = [p.name for p in parameter_list if p.name in STARTUP_ONLY]
        if refused:
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(refused)} cannot be set at run time ({STARTUP_ONLY_HOW})")
        return super().set_parameters_atomically(parameter_list)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        # Ranges are enforced by the descriptors; load-time parameters only while unconfigured.
        on_configure = {spec.name for spec in PARAMS if spec.on_configure}
        refused = [p.name for p in params if p.name in on_configure]
        if refused and self._engine is not None:
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(refused)} can only change while the node is unconfigured "
                       "(deactivate and clean up, set it, configure again)")
        problems = [live_value_problem(p.name, p.value) for p in params if p.name in LIVE_PARAMS]
        if any(problems):
            return SetParametersResult(successful=False, reason="; ".join(filter(None, problems)))
        for param in params:
            if param.name == "queries":
                self._live["queries"] = normalize_phrases(list(param.value or []))
            elif param.name in LIVE_PARAMS:
                self._live[param.name] = float(param.value)
            if param.name == "rate_hz" and self._active:
                self._set_rate(float(param.value))
        if any(p.name in ("queries", "threshold", "rate_hz") for p in params):
            self._publish_standing_queries()
        return SetParametersResult(successful=True)

    def _set_rate(self, rate_hz: float) -> None:
        if self._standing_timer is not None:
            self.destroy_timer(self._standing_timer)
            self._standing_timer = None
        if rate_hz > 0.0:
            # Steady time even under use_sim_time: rate_hz budgets compute, and a timer on /clock
            # stands still while a lockstep replay waits for this node's answer (and fires late in rclpy).
            self._standing_timer = self.create_timer(1.0 / rate_hz, self._on_timer,
                                                     callback_group=self._timer_group,
                                                     clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _threshold(self, requested: float = 0.0) -> float:
        """The request's threshold, else the parameter, else the backend's recommended value."""
        if requested > 1.0 or not np.isfinite(requested):
            raise VlmPerceptionError(f"threshold {requested} is outside (0, 1]; use <= 0 for the node's default")
        if requested > 0.0:
            return float(requested)
        if self._live["threshold"] > 0.0:
            return float(self._live["threshold"])
        return self._engine.default_threshold if self._engine is not None else 0.0

    def _publish_standing_queries(self) -> None:
        self._standing_pub.publish(StandingQueries(
            stamp=self.get_clock().now().to_msg(),
            queries=list(self._live["queries"]),
            threshold=float(self._threshold()),
            rate_hz=float(self._live["rate_hz"]),
            cameras=list(self._channels),
            backend=self._engine.backend_name if self._engine is not None else "",
        ))

    # --- standing queries ------------------------------------------------------------

    def _on_timer(self) -> None:
        queries = self._live["queries"]
        channels = list(self._channels.values())
        if not queries or not channels:
            return
        # Start with a different camera each tick: one slow camera cannot always go first.
        self._round_robin = (self._round_robin + 1) % len(channels)
        for channel in channels[self._round_robin:] + channels[:self._round_robin]:
            if channel.frame.seq == channel.last_standing_seq:
                continue
            try:
                # Chosen before taking the lock: waiting for a frame's depth must not hold up a service call.
                frame, depth_wait_ran_out = channel.frame_with_depth(self._live["max_image_age"],
                                                                     self._live["sync_slop"])
                if frame.seq <= channel.last_standing_seq:
                    continue  # the newest frame with depth was evaluated already
                with self._work_lock:
                    if not self._active:
                        return
                    channel.last_standing_seq = frame.seq
                    self._evaluate(channel, frame.header, frame.rgb, queries, self._threshold(), want_grasps=True,
                                   depth_wait_ran_out=depth_wait_ran_out)
            except VlmPerceptionError as exc:
                self._warnings.warn(f"standing:{channel.name}", f"standing queries on {channel.name} skipped: {exc}")

    def _evaluate(self, channel: CameraChannel, header: Any, rgb: np.ndarray, phrases: list[str], threshold: float,
                  want_grasps: bool, depth_wait_ran_out: bool = False
                  ) -> tuple[SceneResult, ObjectPresenceArray, GraspTargetArray]:
        """Run the backend, add 3D grasps, publish every output of `channel`; returns what was published.
        `depth_wait_ran_out`: the frame was chosen by CameraChannel.frame_with_depth, whose wait ran out."""
        result = self._engine.evaluate(rgb, phrases, threshold)
        now_ns = self.get_clock().now().nanoseconds
        self._latency.add(result.inference_ms)
        self._queries_per_s.tick(now_ns)
        if want_grasps:
            settings = self._live
            grasps = channel.grasper.grasps(
                stamp_to_ns(header.stamp), rgb.shape[:2], [t.box for t in result.targets],
                settings["sync_slop"], settings["depth_scale"], settings["grasp_margin"], depth_wait_ran_out)
        else:
            grasps = [no_pose("3D pose not requested (want_grasps is false)")] * len(result.targets)
        presence, targets = scene_msgs(header, result, grasps, self._engine.backend_name)
        channel.presence_pub.publish(presence)
        channel.targets_pub.publish(targets)
        poses = pose_outputs(targets)
        if poses is not None:
            channel.poses_pub.publish(poses[0])
            channel.pose_pub.publish(poses[1])
            if self._to_target is not None:
                self._publish_in_target_frame(channel, poses[0])
        if channel.detections_pub is not None:
            channel.detections_pub.publish(detection_array_msg(header, result.targets))
        if channel.debug_image_pub.get_subscription_count() > 0:  # drawing costs; only for a watcher
            drawn = draw_detections(rgb, result.targets, result.presence)
            channel.debug_image_pub.publish(Image(header=header, **images.encode_image_fields(drawn, "rgb8")))
            channel.debug_images += 1
        return result, presence, targets

    def _publish_in_target_frame(self, channel: CameraChannel, poses: PoseArray) -> None:
        try:
            moved = self._to_target.transform(poses)
        except VlmPerceptionError as exc:
            self._warnings.warn("target_frame", str(exc))
            return
        channel.target_poses_pub.publish(moved)
        channel.target_pose_pub.publish(PoseStamped(header=moved.header, pose=moved.poses[0]))

    # --- the query service -----------------------------------------------------------

    def _on_query(self, request: QueryScene.Request, response: QueryScene.Response) -> QueryScene.Response:
        try:
            with self._work_lock:
                self._answer(request, response)
            response.success = True
        except VlmPerceptionError as exc:
            response.success = False
            response.message = str(exc)
            self.get_logger().warning(f"query {request.query[:80]!r} failed: {exc}")
        return response

    def _answer(self, request: QueryScene.Request, response: QueryScene.Response) -> None:
        if not self._active:
            state = self._state_machine.current_state[1]
            raise NotActiveError(
                f"node is not active (state: {state}); activate it: "
                f"ros2 lifecycle set {self.get_fully_qualified_name()} activate")
        channel = self._channel(request.camera)
        response.camera_used = channel.name
        parsed = parse_query(request.query)
        threshold = self._threshold(request.threshold)
        header, rgb, depth_wait_ran_out = self._request_image(channel, request.image, request.want_grasps)
        response.image_stamp = header.stamp
        response.localized = self._engine.localizes
        if parsed.open_question:
            if not self._engine.answers_questions:
                raise VlmPerceptionError(
                    f"backend '{self._engine.backend_name}' scores named objects and cannot answer "
                    f"'{parsed.text}'; ask e.g. 'is there a cup?' or 'cup, bottle', or use a backend that "
                    "answers questions (generative, remote)")
            response.answer, response.inference_ms = self._engine.answer(rgb, parsed.text)
            return
        result, presence, targets = self._evaluate(channel, header, rgb, parsed.phrases, threshold,
                                                   request.want_grasps, depth_wait_ran_out)
        response.answer = result.answer
        if request.want_grasps and not self._engine.localizes:
            response.answer += f" No grasp targets: backend '{self._engine.backend_name}' does not localize objects."
        response.presence = presence.results
        response.targets = targets.targets
        response.inference_ms = float(result.inference_ms)

    def _channel(self, camera: str) -> CameraChannel:
        if not camera:
            return next(iter(self._channels.values()))
        channel = self._channels.get(camera)
        if channel is None:
            raise VlmPerceptionError(
                f"unknown camera '{camera}'; this node's cameras: {', '.join(self._channels)} "
                "(leave `camera` empty for the first)")
        return channel

    def _request_image(self, channel: CameraChannel, image: Image, want_grasps: bool) -> tuple[Any, np.ndarray, bool]:
        """Header and pixels to answer from, and whether the wait for the frame's depth ran out."""
        # Any field set means an image was sent: one without pixels is refused, not replaced by the camera's.
        if len(image.data) > 0 or image.height or image.width or image.step or image.encoding:
            try:
                return image.header, images.image_msg_to_rgb8(image), False
            except VlmPerceptionError as exc:
                raise VlmPerceptionError(f"request image: {exc}") from exc
        if want_grasps:
            frame, depth_wait_ran_out = channel.frame_with_depth(self._live["max_image_age"], self._live["sync_slop"])
            return frame.header, frame.rgb, depth_wait_ran_out
        frame = channel.fresh_frame(self.get_clock().now().nanoseconds, self._live["max_image_age"])
        return frame.header, frame.rgb, False

    # --- diagnostics -----------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        engine = self._engine
        now = self.get_clock().now()
        device = str(getattr(engine.backend, "device", "")) if engine is not None else ""
        device = device or self.get_parameter("device").value
        channels = list(self._channels.values())
        statuses = build_statuses(
            node_name=self.get_fully_qualified_name(),
            state=self._state_machine.current_state[1],
            backend=self.get_parameter("backend").value,
            model=self.get_parameter("model").value or self.get_parameter("model_path").value,
            device=device,
            cameras=[channel.health.snapshot(now.nanoseconds) for channel in channels],
            latency_p50_ms=self._latency.percentile(50),
            latency_p95_ms=self._latency.percentile(95),
            queries_per_s=self._queries_per_s.rate(now.nanoseconds),
            gpu_memory_mib=gpu_memory_mib(device),
            now_ns=now.nanoseconds,
            stale_after_s=self._live["stale_frame_s"],
            latency_warn_ms=self._live["latency_warn_ms"],
        )
        if engine is not None:
            statuses[0].values.update(_run_values(engine.backend))
        for status, channel in zip(statuses[1:], channels, strict=True):
            status.values["debug_images_published"] = str(channel.debug_images)
        self._diagnostics_pub.publish(diagnostic_array_msg(now.to_msg(), statuses, self.get_name()))


def _camera_names(names: list[str]) -> list[str]:
    """Validated camera names: unique, usable as topic name tokens."""
    cleaned = [n.strip() for n in names]
    bad = [n for n in cleaned if not CAMERA_NAME.fullmatch(n)]
    if bad:
        raise ConfigurationError(
            f"cameras {bad} are not valid names; use letters, digits and _ starting with a letter")
    if len(set(cleaned)) != len(cleaned):
        raise ConfigurationError(f"cameras {cleaned} has duplicates; each camera needs its own name")
    return cleaned


def _run_values(backend: Any) -> dict[str, str]:
    """How the backend runs its model (precision, runtime, image tower precision), as far as it says."""
    values = {name: str(getattr(backend, name, "")) for name in ("precision", "runtime", "image_tower_precision")}
    return {name: value for name, value in values.items() if value}


def _run_summary(backend: Any) -> str:
    values = _run_values(backend)
    return ", ".join(f"{name} {value}" for name, value in values.items()) or "precision and runtime not reported"


def _backend_options(p: dict[str, Any]) -> dict[str, Any]:
    options = {name: p[name] for name in ("model", "model_path", "device", "precision", "runtime")}
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


def _reason(exc: Exception) -> str:
    """The message of one of ours; type and message of anything else (a bug, or a ROS error)."""
    if isinstance(exc, (BackendLoadError, ConfigurationError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


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
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (BackendLoadError, ConfigurationError) as exc:
        logger.error(f"cannot start: {exc}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C on `ros2 launch` reaches the node twice (the terminal's SIGINT, then launch's):
        # the second must not abort the clean shutdown (launch would say "process has died").
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
