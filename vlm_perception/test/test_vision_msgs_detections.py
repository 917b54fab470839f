"""~/detections over DDS with the real vision_msgs classes (a ROS 2 install or the .ros2-tools overlay,
which builds vision_msgs 4.1.1 from source). test_ros_messages.py checks the conversion against a
stand-in with the same field layout where vision_msgs is missing; this is skipped there, except in CI.
"""
from __future__ import annotations

import numpy as np
import pytest
from plugin_backends import FOUND_SCORE, paint
from ros2_cli import require_module
from ros_harness import start, wait_answerable, wait_until

pytestmark = pytest.mark.integration


def test_detections_are_standard_vision_msgs_with_box_class_and_score(ros):
    require_module("vision_msgs")
    from vision_msgs.msg import Detection2DArray

    node, client = start({"backend": "plugin_backends:ColorBackend"})
    received: list[Detection2DArray] = []
    client.node.create_subscription(Detection2DArray, f"{node.prefix}/detections", received.append, 10)
    try:
        frame = wait_answerable(client, paint(np.zeros((240, 320, 3), np.uint8), "apple", (150, 100, 210, 140)))
        assert wait_until(lambda: any(m.header.stamp == frame.header.stamp for m in received), 10.0), \
            f"no ~/detections for the answered frame; node output:\n{node.output}"
        [info] = client.node.get_publishers_info_by_topic(f"{node.prefix}/detections")
        assert info.topic_type == "vision_msgs/msg/Detection2DArray"
        detections = next(m for m in received if m.header.stamp == frame.header.stamp)
        assert detections.header.frame_id == frame.header.frame_id
        [detection] = detections.detections
        assert detection.header == detections.header
        box = detection.bbox
        assert (box.center.position.x, box.center.position.y, box.size_x, box.size_y) == (180.0, 120.0, 60.0, 40.0)
        [hypothesis] = detection.results
        assert hypothesis.hypothesis.class_id == "apple"
        assert hypothesis.hypothesis.score == pytest.approx(FOUND_SCORE)
    finally:
        client.close()
        node.stop()
