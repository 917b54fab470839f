"""Core results -> messages: diagnostics, and vision_msgs detections against the vision_msgs 4.x layout.

vision_msgs is not on PyPI, so the detections test builds a stand-in with the
field layout of vision_msgs 4.x (Humble, Jazzy, Kilted):
Detection2DArray{header, detections[]}, Detection2D{header, results[], bbox, id},
ObjectHypothesisWithPose{hypothesis{class_id, score}, pose}, BoundingBox2D{center{position{x, y}, theta},
size_x, size_y}. It catches a wrong field path; on a real install the generated classes are used.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from std_msgs.msg import Header

from vlm_perception.ros import ros_messages
from vlm_perception.core.engine import Target2D
from vlm_perception.core.health import HealthStatus, Level


@dataclass
class Point2D:
    x: float = 0.0
    y: float = 0.0


@dataclass
class Pose2D:
    position: Point2D = field(default_factory=Point2D)
    theta: float = 0.0


@dataclass
class BoundingBox2D:
    center: Pose2D = field(default_factory=Pose2D)
    size_x: float = 0.0
    size_y: float = 0.0


@dataclass
class ObjectHypothesis:
    class_id: str = ""
    score: float = 0.0


@dataclass
class ObjectHypothesisWithPose:
    hypothesis: ObjectHypothesis = field(default_factory=ObjectHypothesis)
    pose: Any = None


@dataclass
class Detection2D:
    header: Any = None
    results: list = field(default_factory=list)
    bbox: BoundingBox2D = field(default_factory=BoundingBox2D)
    id: str = ""


@dataclass
class Detection2DArray:
    header: Any = None
    detections: list = field(default_factory=list)


@pytest.fixture
def with_vision_msgs(monkeypatch):
    package, msg = types.ModuleType("vision_msgs"), types.ModuleType("vision_msgs.msg")
    for cls in (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose):
        setattr(msg, cls.__name__, cls)
    package.msg = msg
    monkeypatch.setitem(sys.modules, "vision_msgs", package)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", msg)
    yield importlib.reload(ros_messages)
    monkeypatch.undo()
    importlib.reload(ros_messages)


def test_detections_carry_phrase_score_and_box_in_source_pixels(with_vision_msgs):
    header = Header(frame_id="camera_optical")
    targets = [Target2D("red apple", 0.83, (10.0, 20.0, 50.0, 80.0)), Target2D("cup", 0.4, (0.0, 0.0, 4.0, 2.0))]
    msg = with_vision_msgs.detection_array_msg(header, targets)
    assert isinstance(msg, Detection2DArray) and msg.header is header
    first, second = msg.detections
    assert first.header is header
    [hypothesis] = first.results
    assert hypothesis.hypothesis.class_id == "red apple" and hypothesis.hypothesis.score == pytest.approx(0.83)
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (30.0, 50.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (40.0, 60.0)
    assert second.results[0].hypothesis.class_id == "cup" and second.bbox.size_x == 4.0


def test_without_vision_msgs_there_is_no_detection_type():
    if importlib.util.find_spec("vision_msgs") is not None:
        pytest.skip("vision_msgs is installed here")
    assert ros_messages.Detection2DArray is None


def test_diagnostic_statuses_keep_level_name_message_and_values():
    statuses = [HealthStatus("n: node", int(Level.OK), "active", {"state": "active"}),
                HealthStatus("n: camera left", int(Level.ERROR), "no frames", {"frame_age_s": "n/a"})]
    msg = ros_messages.diagnostic_array_msg(Header().stamp, statuses, "vlm_perception")
    assert [s.level for s in msg.status] == [DiagnosticStatus.OK, DiagnosticStatus.ERROR]
    assert [s.name for s in msg.status] == ["n: node", "n: camera left"]
    assert msg.status[1].message == "no frames" and msg.status[1].hardware_id == "vlm_perception"
    assert [(kv.key, kv.value) for kv in msg.status[1].values] == [("frame_age_s", "n/a")]
