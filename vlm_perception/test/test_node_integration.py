"""The real node executable over real DDS, with a deterministic plugin backend.

One node process per configuration (module-scoped), a test client node in
this process publishing frames and calling `~/query`.
"""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from plugin_backends import ABSENT_SCORE, FOUND_SCORE, paint
from ros_harness import NodeProcess, now_stamp, publish_frame, start, stamp, wait_answerable, wait_until

from sensor_msgs.msg import CompressedImage, Image

from vlm_perception.core.frames import stamp_to_ns as stamp_ns
from vlm_perception.core.images import encode_compressed, encode_image_fields
from vlm_perception.ros.input_qos import RELIABLE_INPUT

pytestmark = pytest.mark.integration
COLOR = "plugin_backends:ColorBackend"
APPLE_BOX = (100, 60, 180, 120)  # x0, y0, x1, y1


def scene(width: int = 320, height: int = 240) -> np.ndarray:
    image = np.full((height, width, 3), 90, np.uint8)
    return paint(image, "apple", APPLE_BOX)


@pytest.fixture(scope="module")
def color_node(ros):
    node, client = start({"backend": COLOR, "queries": ["apple", "banana"], "rate_hz": 5.0,
                          "max_image_age": 5.0})
    yield node, client
    client.close()
    node.stop()


def test_query_answers_presence_targets_and_publishes(color_node):
    node, client = color_node
    frame = wait_answerable(client, scene())
    client.presence.clear()
    client.targets.clear()

    response = client.query("Is there an apple or a banana in the bin?")

    assert response.success, response.message
    assert response.image_stamp == frame.header.stamp
    assert [(p.query, p.present) for p in response.presence] == [("apple", True), ("banana", False)]
    apple, banana = response.presence
    assert apple.confidence == pytest.approx(FOUND_SCORE) and apple.count == 1
    assert banana.confidence == pytest.approx(ABSENT_SCORE) and banana.count == 0
    assert apple.header == frame.header and apple.threshold == pytest.approx(0.1)
    assert response.answer == "Yes: apple (0.90). No: banana (0.02)."
    [target] = response.targets
    x0, y0, x1, y1 = APPLE_BOX
    assert (target.query, target.has_pose) == ("apple", False)
    assert target.pose_status
    assert (target.center_u, target.center_v) == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2))
    assert (target.width_px, target.height_px) == pytest.approx((x1 - x0, y1 - y0))
    assert target.header.frame_id == "camera_optical"
    # The same answer goes out on the topics, stamped with the source frame.
    assert wait_until(lambda: any(len(m.results) == 2 and m.header == frame.header
                                  and [r.query for r in m.results] == ["apple", "banana"]
                                  for m in client.presence), 5.0)
    assert wait_until(lambda: any(m.header == frame.header and len(m.targets) == 1 for m in client.targets), 5.0)
    assert all(m.backend == COLOR for m in client.presence)


def test_request_threshold_overrides_parameter(color_node):
    _, client = color_node
    wait_answerable(client, scene())
    response = client.query("banana", threshold=0.01)
    assert response.success and response.presence[0].present
    assert response.presence[0].threshold == pytest.approx(0.01)


def test_request_image_is_used_instead_of_latest_frame(color_node):
    _, client = color_node
    rgb = paint(np.zeros((50, 80, 3), np.uint8), "cup", (10, 10, 30, 40))
    request_image = Image(**encode_image_fields(rgb[:, :, ::-1].copy(), "bgr8"))
    request_image.header.stamp = stamp(42)
    request_image.header.frame_id = "hand_camera"
    response = client.query("cup", image=request_image)
    assert response.success, response.message
    assert response.image_stamp.sec == 42
    assert response.presence[0].present and response.targets[0].header.frame_id == "hand_camera"
    assert response.targets[0].width_px == pytest.approx(20)


def test_every_object_of_a_question_is_answered(color_node):
    # The where-clause after the cup used to swallow the apple named after it.
    _, client = color_node
    response = client.query("is there a cup in the bin or an apple?", image=Image(**encode_image_fields(scene(), "rgb8")))
    assert response.success, response.message
    assert [(p.query, p.present) for p in response.presence] == [("cup", False), ("apple", True)]


def test_standing_queries_follow_parameter_changes(color_node):
    _, client = color_node
    rgb = scene()
    paint(rgb, "cup", (200, 150, 260, 200))

    def latest_frame_outputs(expect_queries):
        client.presence.clear()
        msg = publish_frame(client, rgb)
        ok = wait_until(lambda: any(m.header == msg.header and [r.query for r in m.results] == expect_queries
                                    for m in client.presence), 5.0)
        return ok, msg

    ok, _ = latest_frame_outputs(["apple", "banana"])
    assert ok, "standing queries were not published for a new frame"

    assert all(r.successful for r in client.set_parameters(queries=["cup", "banana"]))
    ok, msg = latest_frame_outputs(["cup", "banana"])
    assert ok, "changed `queries` did not take effect"
    [result] = [m for m in client.presence if m.header == msg.header]
    assert [r.present for r in result.results] == [True, False]

    assert all(r.successful for r in client.set_parameters(threshold=0.01))
    ok, msg = latest_frame_outputs(["cup", "banana"])
    [result] = [m for m in client.presence if m.header == msg.header]
    assert [r.present for r in result.results] == [True, True]
    assert result.results[1].threshold == pytest.approx(0.01)

    # Invalid values are refused by the descriptors and change nothing.
    assert not client.set_parameters(threshold=1.5)[0].successful
    assert not client.set_parameters(backend="owlvit")[0].successful
    # A rate in range whose period no ROS timer holds: refused with the reason, the node serves on.
    [result] = client.set_parameters(rate_hz=1e-12)
    assert not result.successful and "use 0 for service calls only, or at least 0.001" in result.reason
    ok, _ = latest_frame_outputs(["cup", "banana"])
    assert ok, "a refused rate_hz stopped the standing queries"

    assert all(r.successful for r in client.set_parameters(rate_hz=0.0))
    client.presence.clear()
    publish_frame(client, rgb)
    time.sleep(1.0)
    assert client.presence == [], "rate_hz 0 must stop standing-query output"
    assert all(r.successful for r in client.set_parameters(rate_hz=5.0, threshold=0.1,
                                                           queries=["apple", "banana"]))


def bad_image(**overrides) -> Image:
    msg = Image(**encode_image_fields(np.zeros((4, 6, 3), np.uint8), "rgb8"))
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize("fields, expected", [
    ({"query": ""}, "empty query"),
    ({"query": "   "}, "empty query"),
    ({"query": "apple " * 200}, "over the limit of 1000"),
    ({"query": "apple", "camera": "left"}, "unknown camera 'left'"),
    ({"query": "apple", "threshold": 1.5}, "outside (0, 1]"),
    ({"query": "what is in the bin?"}, "cannot answer"),
    ({"query": "apple", "image": "encoding"}, "unsupported encoding"),
    ({"query": "apple", "image": "step"}, "step"),
    ({"query": "apple", "image": "length"}, "step * height"),
    ({"query": "apple", "image": "zero"}, "zero-size"),
    # Fields set but no pixels: refused, never answered from the camera's frame instead.
    ({"query": "apple", "image": "no data"}, "data is 0 bytes but step * height"),
    ({"query": "apple", "image": "empty 0x0"}, "zero-size"),
])
def test_bad_requests_fail_with_a_reason_and_node_keeps_serving(color_node, fields, expected):
    _, client = color_node
    images = {
        "encoding": lambda: bad_image(encoding="yuv422"),
        "step": lambda: bad_image(step=10),  # smaller than width * 3
        "length": lambda: bad_image(data=bytes(50)),
        "zero": lambda: bad_image(width=0, step=0, data=bytes(1)),
        "no data": lambda: Image(height=60, width=80, encoding="rgb8", step=240),
        "empty 0x0": lambda: Image(encoding="rgb8"),
    }
    if "image" in fields:
        fields = dict(fields, image=images[fields["image"]]())
    response = client.query(**fields)
    assert not response.success
    assert expected in response.message
    assert client.query("apple", image=Image(**encode_image_fields(scene(), "rgb8"))).success


def test_stale_frame_is_refused_then_fresh_one_answers(color_node):
    _, client = color_node
    old = Image(**encode_image_fields(scene(), "rgb8"))
    old.header.stamp = stamp(1000)  # 1970: far older than max_image_age
    client.presence.clear()
    for _ in range(5):
        client.image_pub.publish(old)
        time.sleep(0.05)
    response = client.query("apple")
    assert not response.success and "old, over max_image_age" in response.message
    time.sleep(0.5)
    assert not any(m.header.stamp == old.header.stamp for m in client.presence)
    wait_answerable(client, scene())


def test_frames_with_bad_encoding_are_dropped_with_a_reason(ros):
    node, client = start({"backend": COLOR, "rate_hz": 0.0})
    try:
        assert "no frame received" in client.query("apple").message
        client.wait_for_subscriber()
        for _ in range(5):
            client.image_pub.publish(bad_image(encoding="yuv422"))
            time.sleep(0.05)
        response = client.query("apple")
        assert not response.success
        assert "no frame received" in response.message and "unsupported encoding" in response.message
        assert node.wait_for_output("dropped a frame", 5.0)
    finally:
        client.close()
        node.stop()


def test_compressed_transport_drops_corrupt_frames(ros):
    node, client = start({"backend": COLOR, "rate_hz": 0.0, "image_transport": "compressed"})
    try:
        client.wait_for_subscriber()
        good = CompressedImage(format="png", data=encode_compressed(scene(), "png"))
        for _ in range(50):
            good.header.stamp = now_stamp(client)
            client.compressed_pub.publish(good)
            time.sleep(0.1)
            if client.query("apple").success:
                break
        corrupt = CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg")
        corrupt.header.stamp = now_stamp(client)
        client.compressed_pub.publish(corrupt)
        assert node.wait_for_output("dropped a frame", 5.0)
        response = client.query("apple")
        assert response.success and response.presence[0].present
        assert response.image_stamp == good.header.stamp  # the last good frame, not the corrupt one
    finally:
        client.close()
        node.stop()


def test_slow_calls_do_not_block_frames_and_concurrent_calls_are_answered(ros):
    node, client = start({"backend": COLOR, "rate_hz": 0.0, "max_image_age": 30.0,
                               "backend_options": "{delay_s: 2.0}"})
    try:
        wait_answerable(client, scene())
        first = client.query_async("apple")
        second = client.query_async("banana")
        time.sleep(0.3)  # both are in flight; frames keep arriving meanwhile
        published = [publish_frame(client, scene()) for _ in range(10) if time.sleep(0.1) is None]
        assert wait_until(lambda: first.done() and second.done(), 15.0)
        assert first.result().success and second.result().success
        assert first.result().presence[0].present and not second.result().presence[0].present
        # The next call is answered from the newest frame, not a queued stale one.
        latest = client.query("apple", timeout=15.0)
        assert latest.success and latest.image_stamp == published[-1].header.stamp
    finally:
        client.close()
        node.stop()


def test_flood_of_hd_frames_while_answering(ros):
    # A camera publishing reliable (image_qos auto follows): raw HD frames sent best effort between
    # processes are mostly lost unless the publisher loads the large-image profile.
    node, client = start({"backend": COLOR, "rate_hz": 10.0, "queries": ["apple"],
                               "max_image_age": 5.0}, image_qos="reliable")
    try:
        wait_answerable(client, scene())
        template = Image(**encode_image_fields(scene(1280, 720), "rgb8"))
        streaming = threading.Event()
        streaming.set()

        published: list[int] = []  # stamps in ns, in publishing order

        def stream_at_30_hz():
            next_time = time.monotonic()
            while streaming.is_set():
                template.header.stamp = now_stamp(client)
                client.image_pub.publish(template)
                published.append(stamp_ns(template.header.stamp))
                next_time += 1 / 30
                time.sleep(max(0.0, next_time - time.monotonic()))

        publisher = threading.Thread(target=stream_at_30_hz)
        publisher.start()
        behind = []  # per answer: frames published before the call went out that are newer than the answer's
        try:
            end = time.monotonic() + 4.0
            while time.monotonic() < end:
                published_before_call = len(published)
                response = client.query("apple, banana", timeout=10.0)
                assert response.success, response.message
                assert response.presence[0].present and not response.presence[1].present
                answered = stamp_ns(response.image_stamp)
                # -1: the frame from before the stream (the first call may come before any streamed frame)
                position = published.index(answered) if answered in published else -1
                behind.append(published_before_call - 1 - position)
        finally:
            streaming.clear()
            publisher.join()
        # Every answer comes from a frame at most the DDS queues behind the newest one (the driver's
        # history, the node's reader history, the frame in the node's callback), never from a
        # backlog that grows: counted in frames, as a loaded machine lengthens every queue's wait.
        queues = client.image_pub.qos_profile.depth + RELIABLE_INPUT.depth + 1
        assert len(behind) >= 5 and max(behind) <= queues, behind
        assert node.process.poll() is None
    finally:
        client.close()
        node.stop()


@pytest.mark.parametrize("params, expected", [
    ({"backend": "plugin_backends:FailingToLoadBackend"}, "weights file is corrupt"),
    ({"backend": "no_such_module:Backend"}, "cannot import module 'no_such_module'"),
    ({"backend": "yolo"}, "unknown backend 'yolo'"),
    ({"backend": COLOR, "backend_options": "{colour: red}"}, "does not take option(s) colour"),
    ({"backend": COLOR, "image_qos": "fast"}, "image_qos='fast'"),
    ({"backend": ":ColorBackend"}, "is not 'package.module:ClassName'"),
    ({"backend": COLOR, "rate_hz": 1e-6}, "rate_hz 1e-06 is below 0.001"),
    # An error from ROS itself while configuring is named, not swallowed ("cannot start: " and nothing).
    ({"backend": COLOR, "cameras": ["c" * 250]}, "RCLError"),
])
def test_start_up_failures_exit_non_zero_with_one_clear_line(params, expected):
    node = NodeProcess(f"t{uuid.uuid4().hex[:8]}", params)
    try:
        assert node.wait_exit(60) == 1, node.output
        errors = [line for line in node.output.splitlines() if "cannot start" in line]
        assert len(errors) == 1 and expected in errors[0], node.output
    finally:
        node.stop()
