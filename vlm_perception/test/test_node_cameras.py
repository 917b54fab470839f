"""Several cameras on one model, diagnostics, debug images, latched standing queries and QoS hints, over DDS."""
from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from plugin_backends import COLORS, paint
from ros_harness import NodeProcess, now_stamp, start, wait_until
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from vlm_perception_msgs.msg import ObjectPresenceArray, StandingQueries

from vlm_perception.ros.debug_image import label_color
from vlm_perception.core.images import encode_image_fields, image_msg_to_array

pytestmark = pytest.mark.integration
COLOR = "plugin_backends:ColorBackend"
APPLE_BOX = (100, 60, 180, 120)
BANANA_BOX = (200, 100, 260, 200)
OK, WARN, ERROR = (int.from_bytes(level, "little") for level in
                   (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR))


def frame_with(label: str, box: tuple[int, int, int, int]) -> np.ndarray:
    return paint(np.full((240, 320, 3), 90, np.uint8), label, box)


class Cameras:
    """Publishers for <name>/image and recorders for ~/<name>/ outputs of one node."""

    def __init__(self, client, names: list[str]) -> None:
        node, prefix = client.node, client.node_prefix
        self.client = client
        self.image_pubs = {n: node.create_publisher(Image, f"{n}/image", qos_profile_sensor_data) for n in names}
        self.presence: dict[str, list[ObjectPresenceArray]] = {n: [] for n in names}
        for name in names:
            node.create_subscription(ObjectPresenceArray, f"{prefix}/{name}/presence",
                                     self.presence[name].append, 10)

    def publish(self, name: str, rgb: np.ndarray) -> Image:
        msg = Image(**encode_image_fields(rgb, "rgb8"))
        msg.header.frame_id = f"{name}_optical"
        msg.header.stamp = now_stamp(self.client)
        self.image_pubs[name].publish(msg)
        return msg


class Diagnostics:
    def __init__(self, client) -> None:
        self.prefix = client.node_prefix
        self.latest: dict[str, DiagnosticStatus] = {}
        client.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_array, 10)

    def _on_array(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(self.prefix + ":"):
                self.latest[status.name] = status

    def status(self, what: str) -> DiagnosticStatus | None:
        return self.latest.get(f"{self.prefix}: {what}")

    def wait_for(self, what: str, condition, timeout: float = 15.0) -> DiagnosticStatus:
        assert wait_until(lambda: self.status(what) is not None and condition(self.status(what)), timeout), \
            f"diagnostics for {what}: {self.status(what)}"
        return self.status(what)


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def level(status: DiagnosticStatus) -> int:
    return int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level)


@pytest.fixture(scope="module")
def two_cameras(ros):
    node, client = start({"backend": COLOR, "cameras": ["left", "right"], "queries": ["apple", "banana"],
                          "rate_hz": 5.0, "max_image_age": 5.0, "stale_frame_s": 0.5})
    cameras = Cameras(client, ["left", "right"])
    diagnostics = Diagnostics(client)
    yield node, client, cameras, diagnostics
    client.close()
    node.stop()


def keep_publishing(cameras: Cameras, scenes: dict[str, np.ndarray], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, rgb in scenes.items():
            cameras.publish(name, rgb)
        time.sleep(0.05)


def test_two_cameras_answer_about_their_own_frames(two_cameras):
    node, client, cameras, _ = two_cameras
    scenes = {"left": frame_with("apple", APPLE_BOX), "right": frame_with("banana", BANANA_BOX)}
    assert wait_until(lambda: all(p.get_subscription_count() for p in cameras.image_pubs.values()), 10.0)
    keep_publishing(cameras, scenes, 1.0)
    left = client.query("apple, banana", camera="left")
    right = client.query("apple, banana", camera="right")
    assert left.success and right.success, (left.message, right.message)
    assert (left.camera_used, right.camera_used) == ("left", "right")
    assert [p.present for p in left.presence] == [True, False]
    assert [p.present for p in right.presence] == [False, True]
    assert left.localized
    assert left.presence[0].header.frame_id == "left_optical"
    default = client.query("apple", camera="")  # empty = the first camera
    assert default.success and default.camera_used == "left"
    unknown = client.query("apple", camera="rear")
    assert not unknown.success and "unknown camera 'rear'" in unknown.message and "left, right" in unknown.message
    # Standing queries run on both cameras and publish under each camera's namespace.
    for name, expected in (("left", [True, False]), ("right", [False, True])):
        assert wait_until(lambda: any([p.present for p in m.results] == expected
                                      and m.header.frame_id == f"{name}_optical"
                                      for m in cameras.presence[name]), 10.0), name


def test_debug_image_is_drawn_only_while_someone_subscribes(two_cameras):
    node, client, cameras, diagnostics = two_cameras
    scenes = {"left": frame_with("apple", APPLE_BOX), "right": frame_with("banana", BANANA_BOX)}
    keep_publishing(cameras, scenes, 1.5)
    for name in ("left", "right"):
        status = diagnostics.wait_for(f"camera {name}", lambda s: int(values(s)["frames_evaluated"]) > 0)
        assert values(status)["debug_images_published"] == "0"  # nobody watched: nothing drawn

    received: list[Image] = []
    client.node.create_subscription(Image, f"{client.node_prefix}/left/debug_image", received.append, 1)
    deadline = time.monotonic() + 10.0
    while not received and time.monotonic() < deadline:
        keep_publishing(cameras, scenes, 0.3)
    assert received, "no debug image while subscribed"
    drawn = image_msg_to_array(received[-1])
    assert drawn.shape == (240, 320, 3) and received[-1].header.frame_id == "left_optical"
    x0, y0, x1, y1 = APPLE_BOX
    # The apple's box is outlined in the label's colour (the frame itself has the apple's own colour there).
    assert tuple(drawn[(y0 + y1) // 2, x0]) == label_color("apple") != tuple(COLORS["apple"])
    assert not np.array_equal(drawn, scenes["left"])
    diagnostics.wait_for("camera left", lambda s: int(values(s)["debug_images_published"]) > 0)
    assert values(diagnostics.status("camera right"))["debug_images_published"] == "0"


def test_diagnostics_report_rates_latency_and_stopped_cameras(two_cameras):
    node, client, cameras, diagnostics = two_cameras
    scenes = {"left": frame_with("apple", APPLE_BOX), "right": frame_with("banana", BANANA_BOX)}
    keep_publishing(cameras, scenes, 2.0)
    status = diagnostics.wait_for("node", lambda s: values(s)["latency_p50_ms"] != "n/a")
    node_values = values(status)
    assert node_values["state"] == "active" and node_values["backend"] == COLOR
    assert float(node_values["latency_p95_ms"]) >= float(node_values["latency_p50_ms"]) >= 0.0
    assert level(status) == OK
    left = diagnostics.wait_for("camera left", lambda s: float(values(s)["input_rate_hz"]) > 5.0)
    assert level(left) == OK and values(left)["topic"].endswith("/left/image")

    # The right camera stops: WARN after stale_frame_s, ERROR after 3x, naming its topic; left stays OK.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not (diagnostics.status("camera right")
                                               and level(diagnostics.status("camera right")) == ERROR):
        cameras.publish("left", scenes["left"])
        time.sleep(0.05)
    right = diagnostics.status("camera right")
    assert level(right) == ERROR, right
    assert "right/image" in right.message and "no frames for" in right.message
    assert level(diagnostics.status("camera left")) == OK


def test_standing_queries_are_latched_for_late_subscribers(two_cameras):
    node, client, _, _ = two_cameras
    received: list[StandingQueries] = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    client.node.create_subscription(StandingQueries, f"{client.node_prefix}/standing_queries",
                                    received.append, latched)
    assert wait_until(lambda: bool(received), 10.0)  # published long before this subscription
    assert list(received[-1].queries) == ["apple", "banana"]
    assert list(received[-1].cameras) == ["left", "right"]
    assert received[-1].threshold == pytest.approx(0.1)  # the plugin's default (the protocol's)
    [result] = client.set_parameters(queries=["banana"])
    assert result.successful
    assert wait_until(lambda: list(received[-1].queries) == ["banana"], 10.0)
    [result] = client.set_parameters(queries=["apple", "banana"])
    assert result.successful


def test_latency_over_the_parameter_is_a_warning(ros):
    node, client = start({"backend": COLOR, "backend_options": "{delay_s: 0.05}", "latency_warn_ms": 10.0,
                          "queries": ["apple"], "rate_hz": 10.0, "max_image_age": 5.0})
    try:
        diagnostics = Diagnostics(client)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not (diagnostics.status("node")
                                                   and level(diagnostics.status("node")) == WARN):
            cameras_publish_default(client)
        status = diagnostics.status("node")
        assert status is not None and level(status) == WARN, status
        assert "latency_warn_ms" in status.message
    finally:
        client.close()
        node.stop()


def cameras_publish_default(client) -> None:
    msg = Image(**encode_image_fields(frame_with("apple", APPLE_BOX), "rgb8"))
    msg.header.stamp = now_stamp(client)
    client.image_pub.publish(msg)
    time.sleep(0.05)


def test_incompatible_camera_qos_is_reported_naming_the_parameter(ros):
    # The test client publishes best effort (like most camera drivers); the node asks for reliable.
    node, client = start({"backend": COLOR, "image_qos": "reliable"})
    try:
        assert node.wait_for_output("set the parameter image_qos to auto", 20.0), node.output
    finally:
        client.close()
        node.stop()


def test_missing_camera_publisher_is_reported_after_activation(ros):
    node, client = start({"backend": COLOR, "cameras": ["wrist"]})
    try:
        assert node.wait_for_output("camera 'wrist': no frame on", 20.0), node.output
        assert "nothing publishes on it" in node.output
    finally:
        client.close()
        node.stop()


def test_camera_names_are_validated(ros):
    node = NodeProcess("tbadcams", {"backend": COLOR, "cameras": ["left", "left"]})
    try:
        assert node.wait_exit(60) == 1, node.output
        assert "duplicates" in node.output and "Traceback" not in node.output
    finally:
        node.stop()
