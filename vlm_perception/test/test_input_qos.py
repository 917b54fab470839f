"""image_qos auto's choice, the no-frames diagnosis and the tools' Fast DDS profile, without DDS."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from rclpy.qos import ReliabilityPolicy

from vlm_perception.core.health import CameraHealth, build_statuses
from vlm_perception.ros.dds_profile import PROFILE_VARIABLES, large_image_profile, use_large_image_profile
from vlm_perception.ros.input_qos import InputQos, offered_reliability
from vlm_perception.ros.qos_check import QUIET_S, WARN_AFTER_S, QosChecker

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
TOPIC = "/cam/image"


def publisher(name: str, reliability: ReliabilityPolicy) -> SimpleNamespace:
    return SimpleNamespace(node_name=name, qos_profile=SimpleNamespace(reliability=reliability),
                           endpoint_gid=list(name.encode()))


class FakeNode:
    """What InputQos and QosChecker use of a node: the graph, and a logger that records."""

    def __init__(self) -> None:
        self.publishers: dict[str, list[SimpleNamespace]] = {}
        self.lines: list[str] = []
        self.get_logger = lambda: SimpleNamespace(info=self.lines.append, warning=self.lines.append)

    def get_publishers_info_by_topic(self, topic: str) -> list[SimpleNamespace]:
        return self.publishers.get(topic, [])


class FakeChannel:
    def __init__(self) -> None:
        self.name = "default"
        self.image_topic = TOPIC
        self.health = CameraHealth("default", TOPIC)
        self.subscribed: list[tuple[str, ReliabilityPolicy]] = []

    def input_topics(self) -> dict[str, str]:
        return {"image": TOPIC, "depth": "/cam/depth"}

    def set_input_qos(self, kind: str, qos) -> None:
        self.subscribed.append((kind, qos.reliability))


@pytest.mark.parametrize("offered, expected", [
    ([], None),
    ([RELIABLE], RELIABLE),
    ([RELIABLE, RELIABLE], RELIABLE),
    ([BEST_EFFORT], BEST_EFFORT),
    ([RELIABLE, BEST_EFFORT], BEST_EFFORT),
    ([ReliabilityPolicy.SYSTEM_DEFAULT], BEST_EFFORT),  # not saying: best effort takes it either way
])
def test_auto_takes_reliable_only_when_every_publisher_is(offered, expected):
    assert offered_reliability([publisher(f"p{i}", r) for i, r in enumerate(offered)]) == expected


def test_auto_subscribes_when_a_publisher_appears_and_again_when_the_offer_changes():
    node, channel = FakeNode(), FakeChannel()
    qos = InputQos(node, "auto")
    qos.subscribe([channel])
    assert channel.subscribed == [] and "nothing publishes on /cam/image yet" in node.lines[-1]
    node.publishers[TOPIC] = [publisher("driver", RELIABLE)]
    qos.follow([channel])
    assert channel.subscribed == [("image", RELIABLE)] and qos.reliability(channel) == RELIABLE
    assert node.lines[-1] == ("camera 'default': image_qos auto: subscribed to /cam/image reliable, "
                              "as its publisher(s) offer: driver reliable")
    logged = len(node.lines)
    qos.follow([channel])  # nothing changed: no new subscription, no new line
    assert len(channel.subscribed) == 1 and len(node.lines) == logged
    node.publishers[TOPIC].append(publisher("viewer", BEST_EFFORT))
    qos.follow([channel])
    assert channel.subscribed[-1] == ("image", BEST_EFFORT) and qos.changes(channel) == 2
    node.publishers[TOPIC] = []
    qos.follow([channel])  # all left: keep the subscription
    assert len(channel.subscribed) == 2


@pytest.mark.parametrize("mode, reliability", [("sensor_data", BEST_EFFORT), ("reliable", RELIABLE)])
def test_fixed_modes_subscribe_image_and_depth_at_once_and_never_follow(mode, reliability):
    node, channel = FakeNode(), FakeChannel()
    qos = InputQos(node, mode)
    qos.subscribe([channel])
    assert channel.subscribed == [("image", reliability), ("depth", reliability)]
    node.publishers[TOPIC] = [publisher("driver", RELIABLE if reliability == BEST_EFFORT else BEST_EFFORT)]
    qos.follow([channel])
    assert len(channel.subscribed) == 2


def checker(mode: str, offered: list[ReliabilityPolicy], compressed: bool = False):
    node, channel = FakeNode(), FakeChannel()
    node.publishers[TOPIC] = [publisher(f"driver{i}", r) for i, r in enumerate(offered)]
    qos = InputQos(node, mode)
    qos.subscribe([channel])
    return node, channel, QosChecker(node, qos, compressed)


@pytest.mark.parametrize("mode, offered, had_frames, expected", [
    ("auto", [], False, "nothing publishes on it; remap the camera's image topic to /cam/image"),
    ("auto", [], True, "its publisher(s) left the topic"),
    ("reliable", [BEST_EFFORT], False, "offer best effort, which image_qos 'reliable' (reliable) never receives; "
                                       "set the parameter image_qos to auto"),
    ("sensor_data", [RELIABLE], False, "its publisher(s) offer reliable but image_qos 'sensor_data' subscribes "
                                       "best effort"),
    ("auto", [BEST_EFFORT], False, "load the large-image profile in the camera driver's process "
                                   "(FASTRTPS_DEFAULT_PROFILES_FILE="),
    ("auto", [RELIABLE], False, "1 reliable publisher(s) (driver0) are connected but send nothing"),
    ("auto", [RELIABLE], True, "are still there but their frames stopped"),
])
def test_the_diagnosis_names_the_fix(mode, offered, had_frames, expected):
    _, channel, check = checker(mode, offered)
    assert expected in check.diagnose(channel, had_frames)


def test_compressed_transport_is_not_suggested_when_it_is_in_use():
    _, channel, check = checker("auto", [BEST_EFFORT], compressed=True)
    assert "image_transport compressed" not in check.diagnose(channel, False)
    _, channel, check = checker("auto", [BEST_EFFORT])
    assert "image_transport compressed" in check.diagnose(channel, False)


def test_diagnosis_runs_all_the_time_into_diagnostics_and_a_throttled_log():
    node, channel, check = checker("auto", [RELIABLE])
    check.start([channel], 0.0)
    check.check([channel], QUIET_S - 0.1)
    assert channel.health.snapshot(0).diagnosis == ""
    check.check([channel], QUIET_S)
    assert "send nothing" in channel.health.snapshot(0).diagnosis and not any("no frame" in x for x in node.lines)
    check.check([channel], WARN_AFTER_S)
    assert node.lines[-1].startswith("camera 'default': no frame on /cam/image for 5 s: 1 reliable publisher(s)")
    logged = len(node.lines)
    check.check([channel], WARN_AFTER_S + 1.0)  # the same problem: throttled
    assert len(node.lines) == logged
    channel.health.accepted(1, wanted=False)
    check.check([channel], 10.0)  # a frame: cleared
    assert channel.health.snapshot(0).diagnosis == ""
    check.check([channel], 10.0 + WARN_AFTER_S)  # stopped after flowing: a new problem, said at once
    assert "for 5 s after frames had arrived: 1 publisher(s) (driver0) are still there" in node.lines[-1]
    # A best-effort publisher joins and nothing comes: its frames never arrived, they did not stop.
    node.publishers[TOPIC].append(publisher("viewer", BEST_EFFORT))
    check.check([channel], 10.0 + 2 * WARN_AFTER_S)
    assert "for 10 s: publisher(s) viewer send best effort" in node.lines[-1]


def test_diagnostics_carry_the_diagnosis_instead_of_the_generic_hint():
    health = CameraHealth("default", TOPIC)
    health.set_diagnosis("nothing publishes on it; remap the camera's image topic to /cam/image")
    common = dict(node_name="n", state="active", backend="b", model="", device="cpu", latency_p50_ms=None,
                  latency_p95_ms=None, queries_per_s=0.0, gpu_memory_mib=None, now_ns=10**10,
                  stale_after_s=1.0, latency_warn_ms=0.0)
    camera = build_statuses(cameras=[health.snapshot(10**10)], **common)[1]
    assert camera.message == (f"no frames received on {TOPIC}; nothing publishes on it; "
                              "remap the camera's image topic to /cam/image")
    assert camera.values["diagnosis"].startswith("nothing publishes")


def test_tools_load_the_large_image_profile_unless_the_user_chose_one():
    path = large_image_profile()
    assert path is not None and path.name == "fastdds_large_images.xml" and path.is_file()
    environ: dict[str, str] = {}
    assert use_large_image_profile(environ) == path
    assert environ == {name: str(path) for name in PROFILE_VARIABLES}
    for name in PROFILE_VARIABLES:
        mine = {name: "/etc/my_profile.xml"}
        assert use_large_image_profile(mine) is None and mine == {name: "/etc/my_profile.xml"}
