"""Runs the real node executable as its own process and talks to it over DDS."""
from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rclpy
import yaml
from ament_index_python.packages import get_package_prefix
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseArray, PoseStamped
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vlm_perception_msgs.msg import GraspTargetArray, ObjectPresenceArray
from vlm_perception_msgs.srv import QueryScene

from vlm_perception.core.images import encode_image_fields

TEST_DIR = Path(__file__).resolve().parent

# Keep test traffic on this host and apart from other DDS users (set before rclpy starts), as users
# do. Nothing else: the node under test runs with the DDS settings a user has, no Fast DDS profile.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
NODE_NAME = "vlm_perception"


def node_executable() -> str:
    return str(Path(get_package_prefix("vlm_perception")) / "lib" / "vlm_perception" / "vlm_perception_node")


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    # The test plugins live next to this file; the node imports them by module name.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEST_DIR), env.get("PYTHONPATH", "")]))
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CapturedProcess:
    """A child process whose stdout and stderr are collected line by line for assertions."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_for_output(self, text: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the reader take the last lines
                return text in self.output
            time.sleep(0.05)
        return False


class NodeProcess(CapturedProcess):
    """The node started with a parameter file, its output captured for assertions."""

    def __init__(self, namespace: str, params: dict[str, Any]) -> None:
        self.namespace = namespace
        self.prefix = f"/{namespace}/{NODE_NAME}"
        handle, self._params_path = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(handle, "w") as f:
            yaml.safe_dump({"/**": {"ros__parameters": params}}, f)
        super().__init__(subprocess.Popen(
            [node_executable(), "--ros-args", "-r", f"__ns:=/{namespace}", "--params-file", self._params_path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=node_env()))

    def wait_exit(self, timeout: float) -> Optional[int]:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT, as ros2 launch does
            if self.wait_exit(10) is None:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        os.unlink(self._params_path)


def wait_until(condition: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period)
    return condition()


def stamp(sec: int, nanosec: int = 0) -> Any:
    return Time(sec=sec, nanosec=nanosec)


class TestClient:
    """A node in the test process: publishes camera frames, calls the service, records outputs."""

    __test__ = False  # not a pytest class

    def __init__(self, node_prefix: str, image_qos: str = "sensor_data", subscribe_outputs: bool = True) -> None:
        namespace = node_prefix.rsplit("/", 1)[0]
        self.node = rclpy.create_node(f"test_client_{os.getpid()}_{id(self)}", namespace=namespace)
        qos = qos_profile_sensor_data if image_qos == "sensor_data" else 10
        self.image_pub = self.node.create_publisher(Image, "image", qos)
        self.compressed_pub = self.node.create_publisher(CompressedImage, "image/compressed", qos)
        self.depth_pub = self.node.create_publisher(Image, "depth", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self.presence: list[ObjectPresenceArray] = []
        self.targets: list[GraspTargetArray] = []
        self.pose: list[PoseStamped] = []
        self.poses: list[PoseArray] = []
        if subscribe_outputs:
            self.node.create_subscription(ObjectPresenceArray, f"{node_prefix}/presence", self.presence.append, 10)
            self.node.create_subscription(GraspTargetArray, f"{node_prefix}/grasp_targets", self.targets.append, 10)
            self.node.create_subscription(PoseStamped, f"{node_prefix}/grasp_pose", self.pose.append, 10)
            self.node.create_subscription(PoseArray, f"{node_prefix}/grasp_poses", self.poses.append, 10)
        self.query_client = self.node.create_client(QueryScene, f"{node_prefix}/query")
        self.node_prefix = node_prefix
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
        self._spinner.start()

    def wait_for_service(self, timeout: float = 60.0) -> bool:
        return self.query_client.wait_for_service(timeout_sec=timeout)

    def wait_for_subscriber(self, timeout: float = 10.0) -> bool:
        return wait_until(lambda: self.image_pub.get_subscription_count() > 0
                          or self.compressed_pub.get_subscription_count() > 0, timeout)

    def wait_for_camera_inputs(self, timeout: float = 10.0) -> bool:
        """Until the node subscribes image, depth and camera_info: a message published before its
        subscription matched never reaches it (image_qos auto subscribes once it sees a publisher,
        and discovery of each subscription takes its own time)."""
        return wait_until(lambda: all(pub.get_subscription_count() > 0
                                      for pub in (self.image_pub, self.depth_pub, self.info_pub)), timeout)

    def handshake(self, timeout: float = 60.0) -> None:
        """Wait until a call gets an answer: right after discovery, DDS may drop the first
        response while the server's response writer has not yet matched our reader."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.query("", timeout=2.0)  # an empty query is refused at once, no inference
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def query_async(self, query: str, **fields: Any) -> Any:
        return self.query_client.call_async(QueryScene.Request(query=query, **fields))

    def query(self, query: str, timeout: float = 30.0, **fields: Any) -> Any:
        future = self.query_async(query, **fields)
        answered = threading.Event()
        future.add_done_callback(lambda _: answered.set())
        if not answered.wait(timeout):
            raise TimeoutError(f"no answer to {query!r} within {timeout} s")
        return future.result()

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
        """Call one of the node's services (`name` relative to the node) and wait for the reply."""
        client = self.node.create_client(srv_type, f"{self.node_prefix}/{name}")
        try:
            assert client.wait_for_service(timeout_sec=10.0), f"no service {self.node_prefix}/{name}"
            future = client.call_async(request)
            assert wait_until(future.done, timeout), f"no reply from {self.node_prefix}/{name}"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, **values: Any) -> list[Any]:
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return list(self.call(SetParameters, "set_parameters", request, 10.0).results)

    def change_state(self, transition: str) -> bool:
        """Request a lifecycle transition by label ("configure", "activate", ...); True if it happened."""
        request = ChangeState.Request()
        request.transition.label = transition
        return bool(self.call(ChangeState, "change_state", request).success)

    def lifecycle_state(self) -> str:
        return str(self.call(GetState, "get_state", GetState.Request()).current_state.label)

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()


def now_stamp(client: TestClient):
    return client.node.get_clock().now().to_msg()


def publish_frame(client: TestClient, rgb: np.ndarray, frame_id: str = "camera_optical") -> Image:
    msg = Image(**encode_image_fields(rgb, "rgb8"))
    msg.header.frame_id = frame_id
    msg.header.stamp = now_stamp(client)
    client.image_pub.publish(msg)
    return msg


def wait_answerable(client: TestClient, rgb: np.ndarray) -> Image:
    """Publish frames until the node has one (best-effort QoS may lose the very first)."""
    for _ in range(50):
        msg = publish_frame(client, rgb)
        time.sleep(0.1)
        response = client.query("apple")
        if response.success and response.image_stamp == msg.header.stamp:
            return msg
    raise AssertionError("node never answered from a published frame")


def start(params: dict, timeout: float = 60.0, **client_kwargs: Any) -> tuple[NodeProcess, TestClient]:
    """The node process and a connected test client; fails with the node's output if it never serves
    within `timeout` seconds (model loading included)."""
    namespace = f"t{uuid.uuid4().hex[:8]}"
    node = NodeProcess(namespace, params)
    client = TestClient(node.prefix, **client_kwargs)
    if not wait_until(lambda: node.process.poll() is not None or client.wait_for_service(0.2), timeout) \
            or node.process.poll() is not None:
        client.close()
        node.stop()
        raise AssertionError(f"service never came up; node output:\n{node.output}")
    client.handshake()
    return node, client
