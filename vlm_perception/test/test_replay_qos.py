"""vlm_perception_replay offers each topic the QoS the bag recorded: latched /tf_static reaches late subscribers.

Two static broadcasters each publish one transform on /tf_static (TRANSIENT_LOCAL); tf2's
listeners subscribe TRANSIENT_LOCAL, often after the bag has published them. The replay
runs as its own process; subscribers are processes too (topic_listener.py), one that
starts before the replay and one that starts after /tf_static went out.

The PyPI wheels have no tf2_msgs: where it is not installed, the module builds its one
message (tf2_msgs/msg/TFMessage, as geometry2 defines it) into an overlay with colcon.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from mcap_ros2.writer import Writer as Ros2McapWriter
from ros_harness import TEST_DIR, CapturedProcess, node_env, start, wait_until
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from test_offered_qos import write_mcap_with_offers
from test_replay import replay_executable

from vlm_perception.bag.bagfile import BagReader
from vlm_perception.bag.offered_qos import TF_MESSAGE

pytestmark = pytest.mark.integration
IMAGE_TOPIC, IMAGE_TYPE = "/camera/color/image_raw", "sensor_msgs/msg/Image"
FRAMES, FRAME_PERIOD_NS = 40, 200_000_000  # 8 s of frames: time for a late subscriber to start
START_NS = 1_700_000_000_000_000_000
CHILD_FRAMES = ["camera_link", "gripper_link"]  # one per static broadcaster
STORE = get_typestore(Stores.ROS2_JAZZY)
INFINITE = QosTime(9223372036, 854775807)


def offer(durability: QosDurability) -> Qos:
    """A publisher's QoS as `ros2 bag record` stores it from the graph."""
    return Qos(QosHistory.UNKNOWN, 0, QosReliability.RELIABLE, durability, INFINITE, INFINITE,
               QosLiveliness.AUTOMATIC, INFINITE, False)


def tf_message(child: str) -> dict:
    return {"transforms": [{"header": {"stamp": {"sec": 1, "nanosec": 0}, "frame_id": "base_link"},
                            "child_frame_id": child,
                            "transform": {"translation": {"x": 0.1, "y": 0.0, "z": 0.5},
                                          "rotation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}}}]}


def image_message(index: int) -> dict:
    return {"header": {"stamp": {"sec": index, "nanosec": 0}, "frame_id": "camera"},
            "height": 2, "width": 2, "encoding": "rgb8", "is_bigendian": 0, "step": 6, "data": bytes(12)}


def cdr(msgtype: str, fields: dict) -> bytes:
    """The CDR bytes of a message given as nested dicts (lists of dicts for message sequences)."""
    return STORE.serialize_cdr(_message(msgtype, fields), msgtype)


def _message(msgtype: str, fields: dict) -> object:
    kinds = dict(STORE.fielddefs[msgtype][1])  # name -> (node type, detail), as rosbags defines them
    values = {}
    for name, value in fields.items():
        _, detail = kinds[name]
        if isinstance(value, dict):
            value = _message(detail, value)
        elif isinstance(value, list):
            value = [_message(detail[0][1], item) for item in value]
        elif isinstance(value, bytes):
            value = np.frombuffer(value, np.uint8)
        values[name] = value
    return STORE.types[msgtype](**values)


def write_rosbag2(path: Path) -> Path:
    """A rosbag2 (MCAP) as `ros2 bag record` leaves it: two static broadcasters on /tf_static, a camera."""
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        tf = writer.add_connection("/tf_static", TF_MESSAGE, typestore=STORE, offered_qos_profiles=[
            offer(QosDurability.TRANSIENT_LOCAL), offer(QosDurability.TRANSIENT_LOCAL)])
        image = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=STORE,
                                      offered_qos_profiles=[offer(QosDurability.VOLATILE)])
        for index, child in enumerate(CHILD_FRAMES):
            writer.write(tf, START_NS + index, cdr(TF_MESSAGE, tf_message(child)))
        for index in range(FRAMES):
            writer.write(image, START_NS + 1_000_000 + index * FRAME_PERIOD_NS, cdr(IMAGE_TYPE, image_message(index)))
    return path


def write_bare_mcap(path: Path) -> Path:
    """The same messages in one .mcap file as Foxglove's writer makes it: no QoS recorded."""
    with path.open("wb") as stream:
        writer = Ros2McapWriter(stream)
        schemas = {msgtype: writer.register_msgdef(msgtype, STORE.generate_msgdef(msgtype, ros_version=2)[0])
                   for msgtype in (TF_MESSAGE, IMAGE_TYPE)}
        for index, child in enumerate(CHILD_FRAMES):
            writer.write_message("/tf_static", schemas[TF_MESSAGE], tf_message(child), log_time=START_NS + index)
        for index in range(FRAMES):
            writer.write_message(IMAGE_TOPIC, schemas[IMAGE_TYPE], image_message(index),
                                 log_time=START_NS + 1_000_000 + index * FRAME_PERIOD_NS)
        writer.finish()
    return path


TF2_MSGS_PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>tf2_msgs/msg/TFMessage for the replay tests, where no ROS 2 install provides it</description>
  <maintainer email="tests@example.com">tests</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""
TF2_MSGS_CMAKE = """cmake_minimum_required(VERSION 3.8)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_package()
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test environment, with tf2_msgs (built into an overlay where it is not installed)."""
    env = node_env()
    if importlib.util.find_spec("tf2_msgs") is not None:
        return env
    root = tmp_path_factory.mktemp("tf2-msgs-overlay")
    package = root / "src" / "tf2_msgs"
    (package / "msg").mkdir(parents=True)
    (package / "package.xml").write_text(TF2_MSGS_PACKAGE_XML)
    (package / "CMakeLists.txt").write_text(TF2_MSGS_CMAKE)
    (package / "msg" / "TFMessage.msg").write_text("geometry_msgs/TransformStamped[] transforms\n")
    build = subprocess.run(
        [sys.executable, "-m", "colcon", "--log-base", str(root / "log"), "build", "--base-paths", str(root / "src"),
         "--build-base", str(root / "build"), "--install-base", str(root / "install"),
         "--event-handlers", "console_direct-", "--cmake-args", "-DBUILD_TESTING=OFF",
         f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    prefix = root / "install" / "tf2_msgs"
    site, = prefix.glob("lib/python3*/site-packages")
    for variable, path in (("AMENT_PREFIX_PATH", prefix), ("LD_LIBRARY_PATH", prefix / "lib"),
                           ("PYTHONPATH", site)):
        env[variable] = os.pathsep.join(filter(None, [str(path), env.get(variable, "")]))
    return env


def listen(env: dict[str, str], *specs: str) -> CapturedProcess:
    listener = CapturedProcess(subprocess.Popen(
        [sys.executable, str(TEST_DIR / "topic_listener.py"), *specs],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    assert listener.wait_for_output("subscribed", 60.0), listener.output
    return listener


def received(listener: CapturedProcess, topic: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in listener.output.splitlines() if line.startswith(f"{topic} ")]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; stopped whatever the test's outcome."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        stop(process)


@pytest.mark.parametrize("write", [write_rosbag2, write_bare_mcap], ids=["rosbag2-recorded-qos", "bare-mcap"])
def test_late_transient_local_subscriber_gets_every_static_transform(env, processes, write, tmp_path):
    bag = write(tmp_path / ("bag" if write is write_rosbag2 else "bag.mcap"))
    tf_spec, image_spec = f"/tf_static:{TF_MESSAGE}", f"{IMAGE_TOPIC}:{IMAGE_TYPE}"
    early = listen(env, f"{tf_spec}:volatile", f"{image_spec}:volatile")
    processes.append(early.process)
    replay = subprocess.Popen([replay_executable(), str(bag), "--start-delay", "20"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes.append(replay)
    # /tf_static precedes the first frame in the bag: once a frame arrived, it was published.
    assert wait_until(lambda: received(early, IMAGE_TOPIC), 30.0), early.output
    frames_before = len(received(early, IMAGE_TOPIC))
    late = listen(env, f"{tf_spec}:transient_local", f"{image_spec}:volatile")
    processes.append(late.process)
    _, errors = replay.communicate(timeout=60)
    assert replay.returncode == 0, errors
    assert errors == ""
    assert wait_until(lambda: len(received(late, "/tf_static")) >= len(CHILD_FRAMES), 5.0), late.output
    stop(late.process)
    stop(early.process)
    assert sorted(received(early, "/tf_static")) == CHILD_FRAMES
    assert sorted(received(late, "/tf_static")) == CHILD_FRAMES  # both broadcasters', each once
    # The camera topic was recorded volatile: the late subscriber gets only frames published after it joined.
    late_frames = [int(sec) for sec in received(late, IMAGE_TOPIC)]
    assert late_frames, late.output  # it did match the camera publisher
    assert min(late_frames) >= frames_before and late_frames == sorted(late_frames)


def test_recording_stores_offered_qos_and_latched_outputs(ros, env, tmp_path):
    # The node's ~/standing_queries is latched: recorded with a TRANSIENT_LOCAL subscription (so its
    # message, published long before, is in the recording) and stored with the node's offer, so
    # replaying the recording latches it again.
    bag = write_rosbag2(tmp_path / "bag")
    node, client = start({"backend": "plugin_backends:ColorBackend", "queries": ["apple"], "rate_hz": 0.0},
                         subscribe_outputs=False)
    recorded = tmp_path / "recorded"
    try:
        result = subprocess.run(
            [replay_executable(), str(bag), "--start-delay", "2", "--rate", "4", "--record", str(recorded),
             "--record-namespace", f"/{node.namespace}"],
            env=env, capture_output=True, text=True, timeout=120)
    finally:
        client.close()
        node.stop()
    assert result.returncode == 0, result.stderr
    standing = f"{node.prefix}/standing_queries"
    with AnyReader([recorded]) as reader:
        offers = {conn.topic: conn.ext.offered_qos_profiles for conn in reader.connections}
        counts = {conn.topic: conn.msgcount for conn in reader.connections}
        queries = [reader.deserialize(data, conn.msgtype).queries
                   for conn, _, data in reader.messages([c for c in reader.connections if c.topic == standing])]
    assert [o.durability for o in offers[standing]] == [QosDurability.TRANSIENT_LOCAL]
    assert queries == [["apple"]]
    assert [o.durability for o in offers[f"{node.prefix}/presence"]] == [QosDurability.VOLATILE]
    # The replayed inputs carry the replay's own offers: latched /tf_static holding both transforms.
    assert [(o.durability, o.depth) for o in offers["/tf_static"]] == [(QosDurability.TRANSIENT_LOCAL, 2)]
    assert [o.durability for o in offers[IMAGE_TOPIC]] == [QosDurability.VOLATILE]
    assert counts["/tf_static"] == 2 and counts[IMAGE_TOPIC] == FRAMES
    with BagReader(recorded) as reader:
        assert reader.topics[standing].durabilities == ("transient_local",)
        assert reader.topics["/tf_static"].durabilities == ("transient_local",)


def test_unreadable_recorded_qos_is_one_note_and_the_bag_replays_whole(env, tmp_path):
    # Not a tf2_msgs/msg/TFMessage: without readable offers the topic falls back to VOLATILE.
    bag = write_mcap_with_offers(tmp_path / "broken.mcap", "[: not yaml")
    result = subprocess.run([replay_executable(), str(bag), "--start-delay", "0"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    note, = result.stderr.splitlines()
    assert "/tf_static: offered_qos_profiles is not YAML" in note and note.endswith("recorded no QoS (VOLATILE)")
