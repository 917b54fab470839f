"""3D grasp poses through the real node over DDS: color + depth + CameraInfo in, poses out.

The scene: a table facing the camera at 0.8 m with an 8x5 cm block (top at
0.77 m) seen as a red "apple" by the deterministic plugin backend.
"""
from __future__ import annotations

import importlib.util
import math
import threading
import time
import uuid

import numpy as np
import pytest
from cpu_hog import CpuHog
from plugin_backends import paint
from ros_harness import NodeProcess, now_stamp, start, wait_until
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image

from vlm_perception.core.images import encode_image_fields

pytestmark = pytest.mark.integration
WIDTH, HEIGHT, F, CX, CY = 640, 480, 600.0, 319.5, 239.5
BOX = (280, 200, 360, 250)  # x0, y0, x1, y1: 80 x 50 px
TABLE_M, TOP_M, MARGIN = 0.8, 0.77, 0.01


def color_and_depth(depth_scale_mm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rgb = paint(np.full((HEIGHT, WIDTH, 3), 90, np.uint8), "apple", BOX)
    depth = np.full((HEIGHT, WIDTH), TABLE_M, np.float32)
    x0, y0, x1, y1 = BOX
    depth[y0:y1, x0:x1] = TOP_M
    return rgb, (depth * 1000).round().astype(np.uint16) if depth_scale_mm else depth


def camera_info(fx: float = F) -> CameraInfo:
    return CameraInfo(width=WIDTH, height=HEIGHT, k=[fx, 0.0, CX, 0.0, F, CY, 0.0, 0.0, 1.0],
                      header=Image().header)


def publish_scene(client, depth_encoding: str = "16UC1", info: CameraInfo | None = None, depth: bool = True,
                  depth_offset_s: int = 0):
    rgb, depth_image = color_and_depth(depth_encoding == "16UC1")
    stamp = now_stamp(client)
    color = Image(**encode_image_fields(rgb, "rgb8"))
    color.header.stamp, color.header.frame_id = stamp, "camera_color_optical_frame"
    if info is not None:
        info.header = color.header
        client.info_pub.publish(info)
    if depth:
        depth_msg = Image(**encode_image_fields(depth_image, depth_encoding))
        depth_msg.header.frame_id = color.header.frame_id
        depth_msg.header.stamp = Time(sec=stamp.sec + depth_offset_s, nanosec=stamp.nanosec)
        client.depth_pub.publish(depth_msg)
    client.image_pub.publish(color)
    return color


class RgbdStream:
    """An RGB-D camera driver: color, depth and camera_info with one stamp at `hz` on a thread,
    depth `depth_delay_s` after color (as a busy driver or a bigger message delivers it); a
    (low, high) pair draws each frame's delay uniformly from that range."""

    def __init__(self, client, hz: float = 10.0, depth_delay_s: float | tuple[float, float] = 0.0) -> None:
        rgb, depth = color_and_depth()
        self._client = client
        self._period_s = 1.0 / hz
        self._delay_range = depth_delay_s if isinstance(depth_delay_s, tuple) else (depth_delay_s, depth_delay_s)
        self._rng = np.random.default_rng(0)
        self._color = Image(**encode_image_fields(rgb, "rgb8"))
        self._depth = Image(**encode_image_fields(depth, "16UC1"))
        self._info = camera_info()
        self.stamps: list = []  # of the frames published so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RgbdStream":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            header = self._color.header
            header.stamp, header.frame_id = now_stamp(self._client), "camera_color_optical_frame"
            self._depth.header = self._info.header = header
            self._client.info_pub.publish(self._info)
            self._client.image_pub.publish(self._color)
            self.stamps.append(header.stamp)
            time.sleep(self._rng.uniform(*self._delay_range))
            self._client.depth_pub.publish(self._depth)
            next_time += self._period_s
            self._stop.wait(max(0.0, next_time - time.monotonic()))


def query_fresh(client, color, **fields):
    """Ask until the node answers from `color`: a reliable frame that lost a fragment between
    processes is resent after the writer's next heartbeat (Fast DDS: up to 3 s)."""
    for _ in range(100):
        response = client.query("pick the apple", **fields)
        if response.success and response.image_stamp == color.header.stamp:
            return response
        time.sleep(0.1)
    raise AssertionError(f"no answer from the published frame: {response.message}")


def query_posed(client, color, **fields):
    """query_fresh until the answer has a pose: the depth frame published with `color` may arrive
    after it (a reliable frame that lost a fragment between processes is resent later)."""
    for _ in range(100):
        response = query_fresh(client, color, **fields)
        if response.targets and response.targets[0].has_pose:
            break
        time.sleep(0.1)
    return response


def scene_gets_a_pose(client) -> bool:
    color = publish_scene(client, info=camera_info())
    return query_fresh(client, color, want_grasps=True).targets[0].has_pose


@pytest.fixture(scope="module")
def grasp_node(ros):
    # Color and depth published reliable, as RGB-D drivers do by default: 640x480 frames do not fit
    # Fast DDS's default shared-memory segment, and image_qos auto then subscribes reliable.
    node, client = start({"backend": "plugin_backends:ColorBackend", "rate_hz": 0.0, "max_image_age": 5.0,
                          "grasp_margin": MARGIN}, image_qos="reliable")
    assert client.wait_for_camera_inputs()
    # A driver sends camera_info with every frame; these tests send it once per scene, and the
    # node's best-effort camera_info reader drops what comes before it has matched the writer
    # (discovery completes on each side at its own time). Send scenes until one gets a pose.
    assert wait_until(lambda: scene_gets_a_pose(client), 20.0, period=0.2)
    yield node, client
    client.close()
    node.stop()


def test_want_grasps_gives_pose_in_camera_frame_and_publishes_it(grasp_node):
    _, client = grasp_node
    color = publish_scene(client, info=camera_info())
    response = query_posed(client, color, want_grasps=True)
    [target] = response.targets
    assert target.has_pose and target.pose_status == "", target.pose_status
    x0, y0, x1, y1 = BOX
    u, v = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5  # box centre in K's pixel-centre coordinates
    expected = ((u - CX) * TOP_M / F, (v - CY) * TOP_M / F, TOP_M)
    p = target.pose.position
    assert math.dist((p.x, p.y, p.z), expected) < 0.005
    q = target.pose.orientation
    # z axis of the pose = third column of its rotation matrix: along the optical axis, into the table.
    approach = (2 * (q.x * q.z + q.w * q.y), 2 * (q.y * q.z - q.w * q.x), 1 - 2 * (q.x ** 2 + q.y ** 2))
    assert math.degrees(math.acos(min(1.0, approach[2]))) < 2.0
    # The block is 80 x 50 px: the gripper closes across the 50 px (vertical) side.
    closing = (1 - 2 * (q.y ** 2 + q.z ** 2), 2 * (q.x * q.y + q.w * q.z), 2 * (q.x * q.z - q.w * q.y))
    assert abs(closing[1]) > math.cos(math.radians(3))
    assert target.grasp_width == pytest.approx((y1 - y0) * TOP_M / F + MARGIN, abs=0.005)
    assert wait_until(lambda: any(m.header == color.header for m in client.pose), 5.0)
    [pose] = [m for m in client.pose if m.header == color.header]
    assert pose.header.frame_id == "camera_color_optical_frame"
    assert math.dist((pose.pose.position.x, pose.pose.position.y, pose.pose.position.z), expected) < 0.005
    assert wait_until(lambda: any(m.header == color.header and len(m.poses) == 1 for m in client.poses), 5.0)


def test_metres_and_millimetres_depth_give_the_same_pose(grasp_node):
    _, client = grasp_node
    positions = []
    for encoding in ("16UC1", "32FC1"):
        color = publish_scene(client, depth_encoding=encoding, info=camera_info())
        target = query_posed(client, color, want_grasps=True).targets[0]
        assert target.has_pose, target.pose_status
        positions.append((target.pose.position.x, target.pose.position.y, target.pose.position.z))
    assert math.dist(*positions) < 0.002


def test_without_want_grasps_the_3d_work_is_skipped(grasp_node):
    _, client = grasp_node
    color = publish_scene(client, info=camera_info())
    target = query_fresh(client, color, want_grasps=False).targets[0]
    assert not target.has_pose and "want_grasps" in target.pose_status


def test_a_newer_frame_without_depth_gives_way_to_the_newest_paired_one(grasp_node):
    _, client = grasp_node
    paired = publish_scene(client, info=camera_info())
    query_posed(client, paired, want_grasps=True)  # its depth is at the node (reliable resends can be late)
    time.sleep(0.3)  # the newer frame's stamp then lies beyond sync_slop of the paired frame's depth
    newer = publish_scene(client, depth=False)  # newer color frame whose depth never comes
    # Without want_grasps the newest frame answers (repeated until best-effort delivered both frames).
    query_fresh(client, newer)
    response = client.query("pick the apple", want_grasps=True)
    assert response.image_stamp == paired.header.stamp
    assert response.targets[0].has_pose, response.targets[0].pose_status


def test_depth_out_of_sync_is_named_with_the_wait_that_ran_out(grasp_node):
    _, client = grasp_node
    # Depth keeps arriving, stamped 10 s away from every color frame: no frame has a partner.
    # A few frames, so that the paired ones of earlier tests leave the node's history.
    for _ in range(12):
        color = publish_scene(client, info=camera_info(), depth_offset_s=-10)
        time.sleep(0.05)
    target = query_fresh(client, color, want_grasps=True).targets[0]
    assert not target.has_pose
    assert "no depth frame within sync_slop 0.05 s" in target.pose_status
    assert "waited 0.05 s past the image's arrival" in target.pose_status


@pytest.mark.parametrize("delay_s", [0.02, 0.05, 0.08])
def test_grasp_queries_pair_color_with_depth_that_arrives_later(grasp_node, delay_s):
    _, client = grasp_node
    rng = np.random.default_rng(int(delay_s * 1000))
    with RgbdStream(client, depth_delay_s=delay_s) as stream:
        time.sleep(0.5)
        responses = []
        for _ in range(12):  # at random moments: between a color frame and its depth, too
            time.sleep(rng.uniform(0.0, 0.1))
            responses.append(client.query("pick the apple", want_grasps=True))
    assert all(r.success for r in responses), [r.message for r in responses]
    statuses = [r.targets[0].pose_status for r in responses]
    # 640x480 reliable frames that lose a fragment between processes are resent after Fast DDS's next
    # heartbeat, later than any slop: then, and only then, the node may answer without a pose, saying why.
    unposed = [status for status in statuses if status]
    assert len(unposed) <= 1, statuses
    assert all("waited 0.05 s past the image's arrival" in status for status in unposed), statuses
    assert all(r.targets[0].has_pose for r in responses if not r.targets[0].pose_status)
    answered = [r.image_stamp for r in responses]
    assert all(stamp in stream.stamps for stamp in answered)
    ns = [s.sec * 10**9 + s.nanosec for s in answered]
    assert ns == sorted(ns)  # never an older frame than a previous answer's


def test_uncalibrated_camera_info_is_rejected_with_a_reason(grasp_node):
    node, client = grasp_node
    # Published until seen: the inputs of a busy node can match the test's writers late.
    assert wait_until(lambda: publish_scene(client, info=camera_info(fx=0.0)) is not None
                      and node.wait_for_output("ignored camera_info", 1.0), 15.0)
    assert "fx=0" in node.output


@pytest.mark.parametrize("bad_depth, reason", [
    (lambda: Image(**encode_image_fields(np.zeros((4, 4, 3), np.uint8), "rgb8")), "unsupported depth encoding"),
    (lambda: Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(10)), "step * height"),
])
def test_unusable_depth_frames_are_dropped_with_a_reason(grasp_node, bad_depth, reason):
    node, client = grasp_node
    client.depth_pub.publish(bad_depth())
    assert wait_until(lambda: any("dropped a depth frame" in line and reason in line
                                  for line in node.output.splitlines()), 5.0), node.output[-2000:]


def test_standing_and_service_grasps_pair_depth_with_a_cpu_hog_beside_the_node(ros):
    node, client = start({"backend": "plugin_backends:ColorBackend", "queries": ["apple"], "rate_hz": 2.0,
                          "max_image_age": 5.0})
    try:
        client.wait_for_subscriber()
        with RgbdStream(client, depth_delay_s=(0.02, 0.08)), CpuHog(cores=1, limit_s=60.0):
            # The first frames may reach a node slowed by the hog late: start once it has one.
            assert wait_until(lambda: client.query("apple").success, 15.0, period=0.2)
            time.sleep(1.0)
            first = len(client.targets)
            responses = []
            for _ in range(6):
                time.sleep(0.5)
                responses.append(client.query("pick the apple", want_grasps=True))
            standing = client.targets[first:]
        assert all(r.success and r.targets[0].has_pose for r in responses), \
            [r.message or r.targets[0].pose_status for r in responses]
        # ~/grasp_targets carries the service's answers and the standing queries' outputs.
        assert len(standing) >= len(responses) + 2
        assert [m.targets[0].pose_status for m in standing] == [""] * len(standing)
    finally:
        client.close()
        node.stop()


def test_missing_depth_and_camera_info_are_named(ros):
    node, client = start({"backend": "plugin_backends:ColorBackend", "rate_hz": 0.0, "max_image_age": 5.0},
                         image_qos="reliable")
    try:
        assert client.wait_for_camera_inputs()
        color = publish_scene(client, depth=False)
        target = query_fresh(client, color, want_grasps=True).targets[0]
        assert not target.has_pose and target.pose_status.startswith("no depth received on /")
        color = publish_scene(client)  # depth now, still no camera_info
        # The depth frame may come after the color frame (a lost fragment is resent later).
        assert wait_until(lambda: not query_fresh(client, color, want_grasps=True).targets[0]
                          .pose_status.startswith("no depth received"), 10.0, period=0.1)
        target = query_fresh(client, color, want_grasps=True).targets[0]
        assert not target.has_pose and "no camera_info received on /" in target.pose_status
        assert client.pose == []
    finally:
        client.close()
        node.stop()


@pytest.mark.skipif(importlib.util.find_spec("tf2_ros") is not None,
                    reason="tf2_ros is installed: target_frame is accepted here")
def test_target_frame_is_refused_without_tf2():
    node = NodeProcess(f"t{uuid.uuid4().hex[:8]}", {"backend": "plugin_backends:ColorBackend",
                                                      "target_frame": "base_link"})
    try:
        assert node.wait_exit(60) == 1, node.output
        [error] = [line for line in node.output.splitlines() if "cannot start" in line]
        assert "tf2_ros is not installed" in error and "target_frame" in error
    finally:
        node.stop()
