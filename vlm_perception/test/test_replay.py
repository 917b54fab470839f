"""Rosbag replay: the sample bag, vlm_perception_replay through the real node, damaged bags.

The sample bag's objects are drawn in the exact colours of the deterministic
ColorBackend, so every presence answer and box the node gives for a replayed
frame can be checked against the bag's ground truth.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import rclpy
from ament_index_python.packages import get_package_prefix
from plugin_backends import COLORS, ColorBackend
from ros_harness import node_env, start, wait_until
from rclpy.executors import SingleThreadedExecutor
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from vlm_perception.bag import replay, sample_bag
from vlm_perception.bag.bagfile import BagReader
from vlm_perception.core.errors import ReplayError
from vlm_perception.core.frames import stamp_to_ns

pytestmark = pytest.mark.integration
SECONDS, RATE_HZ = 3.0, 10.0
FRAMES = 30
QUERIES = ["apple", "banana", "cup"]
STORAGES = ["mcap", "sqlite3"]


def replay_executable() -> str:
    return str(Path(get_package_prefix("vlm_perception")) / "lib" / "vlm_perception" / "vlm_perception_replay")


def run_replay(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([replay_executable(), *args], env=node_env(), capture_output=True, text=True,
                          timeout=timeout)


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(bag timestamp, message)] in time order, with the definitions stored in the bag."""
    messages: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([path]) as reader:
        for conn, timestamp, data in reader.messages():
            messages.setdefault(conn.topic, []).append((timestamp, reader.deserialize(data, conn.msgtype)))
    return messages


def stamp_ns(msg: Any) -> int:
    """Of a message with a header, or of a rosgraph_msgs/Clock."""
    return stamp_to_ns(msg.clock if hasattr(msg, "clock") else msg.header.stamp)


class Listener:
    """A node in the test process for the whole module; tests subscribe through it.

    While it lives, no test destroys the process's last node: that tears down the DDS participant,
    which can deadlock inside Fast DDS 2.14 (holding the GIL) while a replay process leaves the graph.
    """

    def __init__(self) -> None:
        self.node = rclpy.create_node(f"replay_test_listener_{os.getpid()}")
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
        self._spinner.start()

    def collect(self, msg_type: Any, topic: str, convert: Callable[[Any], Any]) -> tuple[list[Any], Any]:
        """A list that fills with convert(msg) for each message on `topic`, and its subscription."""
        received: list[Any] = []
        subscription = self.node.create_subscription(
            msg_type, topic, lambda msg: received.append(convert(msg)), 100)
        return received, subscription

    def close(self) -> None:
        self._executor.shutdown()
        self._spinner.join(timeout=5)  # then the node is destroyed here, not later on the spinner
        self.node.destroy_node()


@pytest.fixture(scope="module")
def listener(ros) -> Iterator[Listener]:
    node = Listener()
    yield node
    node.close()


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sample-bags")
    return {storage: sample_bag.write_sample_bag(root / storage, SECONDS, RATE_HZ, storage, scene="shapes")
            for storage in STORAGES}


@pytest.fixture(scope="module")
def truth(bags: dict[str, Path]) -> dict[str, Any]:
    return sample_bag.load_ground_truth(bags["mcap"])


# --- the sample bag ----------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_sample_bag_ground_truth_is_what_the_color_backend_sees(bags, truth, storage):
    assert truth["colors"] == {name: list(color) for name, color in COLORS.items()}
    assert sample_bag.load_ground_truth(bags[storage]) == truth
    assert sum(f.stat().st_size for f in bags[storage].iterdir()) < 1_500_000
    frames = truth["frames"]
    assert len(frames) == FRAMES
    presence = {name: [f["objects"][name]["present"] for f in frames] for name in QUERIES}
    assert all(presence["apple"]) and presence["banana"].index(True) == 15 and presence["cup"].index(False) == 23

    backend = ColorBackend()
    messages = read_bag(bags[storage])
    assert {topic: len(msgs) for topic, msgs in messages.items()} == {
        sample_bag.COLOR_TOPIC: FRAMES, sample_bag.DEPTH_TOPIC: FRAMES, sample_bag.INFO_TOPIC: FRAMES}
    for frame, (_, color), (_, depth), (_, info) in zip(
            frames, messages[sample_bag.COLOR_TOPIC], messages[sample_bag.DEPTH_TOPIC],
            messages[sample_bag.INFO_TOPIC]):
        assert stamp_ns(color) == stamp_ns(depth) == stamp_ns(info) == frame["stamp_ns"]
        assert color.header.frame_id == sample_bag.FRAME_ID and info.k[0] == sample_bag.FOCAL_PX
        rgb = color.data.reshape(color.height, color.width, 3)
        depth_mm = depth.data.view("<u2").reshape(depth.height, depth.width)
        for detection in backend.detect(rgb, QUERIES):
            expected = frame["objects"][detection.label]
            assert (detection.box is not None) == expected["present"]
            if expected["present"]:
                assert list(detection.box) == expected["box"]
                on_object = np.all(rgb == COLORS[detection.label], axis=2)
                assert depth_mm[on_object].min() == expected["top_depth_mm"] < sample_bag.FLOOR_MM


def test_sample_bag_cli(tmp_path):
    out = tmp_path / "bag"
    assert sample_bag.main([str(out), "--seconds", "0.2", "--storage", "sqlite3"]) == 0
    assert len(json.loads((out / sample_bag.GROUND_TRUTH_NAME).read_text())["frames"]) == 2
    assert sample_bag.main([str(out)]) == 1  # exists already
    with pytest.raises(SystemExit) as exit_info:
        sample_bag.main([str(tmp_path / "other"), "--rate", "0"])
    assert exit_info.value.code == 2


# --- replay through the node -------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_replay_through_node_answers_every_frame_as_ground_truth(listener, bags, truth, storage, tmp_path):
    # One ~/presence per frame: the node's standing-query timer evaluates the newest frame, and only
    # a new one, at rate_hz. At --rate 0.5 a frame arrives every 200 ms of wall time; the 40 Hz timer
    # ticks every 25 ms and an evaluation with ColorBackend takes a few, so each frame is evaluated
    # on the first tick after it arrives, long before the next one replaces it. The timer runs on
    # wall time, not use_sim_time: rclpy (Jazzy) timers on /clock time fired up to a second late
    # here, which skips frames. Hence max_image_age 0, as the bag's stamps are old. image_qos auto
    # follows the replay's reliable publishers (the client's idle ones are reliable too): DDS drops
    # no frame.
    node, client = start({"backend": "plugin_backends:ColorBackend", "queries": QUERIES, "rate_hz": 40.0,
                          "max_image_age": 0.0}, subscribe_outputs=False, image_qos="reliable")
    namespace, prefix = f"/{node.namespace}", node.prefix
    recorded_path = tmp_path / "recorded"
    clock, clock_subscription = listener.collect(Clock, "/clock", stamp_ns)
    try:
        result = run_replay(
            str(bags[storage]), "--rate", "0.5", "--record", str(recorded_path),
            "--record-namespace", namespace, "--start-delay", "20",
            "--remap", f"{sample_bag.COLOR_TOPIC}:={namespace}/image",
            f"{sample_bag.DEPTH_TOPIC}:={namespace}/depth", f"{sample_bag.INFO_TOPIC}:={namespace}/camera_info")
    finally:
        listener.node.destroy_subscription(clock_subscription)
        client.close()
        node.stop()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress lines when stderr is not a terminal
    # /clock follows the bag at 40 Hz of wall time to its last frame. This test's subscription may
    # be matched only a second or two into the replay, which waits for the node's alone.
    last_ns = truth["frames"][-1]["stamp_ns"]
    assert sample_bag.START_NS <= clock[0] < clock[-1] == last_ns and clock == sorted(clock)
    assert len(clock) > 0.8 * 40 * (clock[-1] - clock[0]) / 1e9 / 0.5

    recorded = read_bag(recorded_path)
    assert {topic: len(msgs) for topic, msgs in recorded.items()} == {
        f"{namespace}/image": FRAMES, f"{namespace}/depth": FRAMES, f"{namespace}/camera_info": FRAMES,
        f"{prefix}/presence": FRAMES, f"{prefix}/grasp_targets": FRAMES,
        f"{prefix}/grasp_poses": FRAMES, f"{prefix}/grasp_pose": FRAMES,
        f"{prefix}/standing_queries": 1}, node.output  # latched: recorded though published before the replay
    frames = truth["frames"]
    inputs = recorded[f"{namespace}/image"]
    for frame, (received, presence), (_, targets), (published, image) in zip(
            frames, recorded[f"{prefix}/presence"], recorded[f"{prefix}/grasp_targets"], inputs):
        assert stamp_ns(presence) == stamp_ns(targets) == stamp_ns(image) == frame["stamp_ns"]
        assert presence.header.frame_id == sample_bag.FRAME_ID
        assert received > published  # both on the recorder's clock
        assert {r.query: r.present for r in presence.results} == {
            name: frame["objects"][name]["present"] for name in QUERIES}
        boxes = {t.query: [t.center_u - t.width_px / 2, t.center_v - t.height_px / 2,
                           t.center_u + t.width_px / 2, t.center_v + t.height_px / 2] for t in targets.targets}
        assert boxes == {name: obj["box"] for name, obj in frame["objects"].items() if obj["present"]}
        assert all(t.has_pose for t in targets.targets), [t.pose_status for t in targets.targets]


def test_lockstep_answers_every_frame_once_in_order_with_a_slow_model(listener, bags, truth, tmp_path):
    # The node as on a robot: standing queries at 2 Hz, bag time (use_sim_time) and a 2 s max_image_age,
    # with a 300 ms model on a 10 Hz bag: paced by the bag it could answer one frame in five at most.
    node, client = start({"backend": "plugin_backends:SlowColorBackend", "queries": QUERIES, "rate_hz": 2.0,
                          "use_sim_time": True, "max_image_age": 2.0, "image_qos": "reliable"},
                         subscribe_outputs=False, image_qos="reliable")
    namespace, prefix = f"/{node.namespace}", node.prefix
    recorded_path = tmp_path / "recorded"
    try:
        result = run_replay(
            str(bags["mcap"]), "--lockstep", "--frame-timeout", "20", "--record", str(recorded_path),
            "--record-namespace", namespace, "--start-delay", "20",
            "--remap", f"{sample_bag.COLOR_TOPIC}:={namespace}/image",
            f"{sample_bag.DEPTH_TOPIC}:={namespace}/depth", f"{sample_bag.INFO_TOPIC}:={namespace}/camera_info",
            timeout=180.0)
    finally:
        client.close()
        node.stop()
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no frame timed out
    recorded = read_bag(recorded_path)
    outputs = recorded[f"{prefix}/presence"]
    frames = truth["frames"]
    assert [stamp_ns(presence) for _, presence in outputs] == [frame["stamp_ns"] for frame in frames]
    for frame, (_, presence) in zip(frames, outputs):
        assert {r.query: r.present for r in presence.results} == {
            name: frame["objects"][name]["present"] for name in QUERIES}
        assert presence.inference_ms >= 300.0
    # Each frame went out only after the answer to the one before.
    published = [t for t, _ in recorded[f"{namespace}/image"]]
    answered = [t for t, _ in outputs]
    assert all(answer < next_frame for answer, next_frame in zip(answered, published[1:]))


def test_lockstep_refuses_without_a_node_and_reports_timeouts(listener, bags, tmp_path):
    result = run_replay(str(bags["mcap"]), "--lockstep", "--start-delay", "0.5",
                        "--record-namespace", "/nobody_here", "--topics", sample_bag.COLOR_TOPIC)
    assert result.returncode == 1
    line, = result.stderr.splitlines()
    assert "--lockstep found no vlm_perception ~/presence output" in line and "/nobody_here" in line
    result = run_replay(str(bags["mcap"]), "--lockstep", "--frame-topic", "/nope", "--start-delay", "0")
    assert result.returncode == 1 and "--frame-topic /nope is not an Image" in result.stderr

    # A node with no standing queries never answers by itself: every frame times out, each said.
    node, client = start({"backend": "plugin_backends:ColorBackend", "queries": QUERIES, "rate_hz": 0.0},
                         subscribe_outputs=False)
    try:
        result = run_replay(str(bags["mcap"]), "--lockstep", "--frame-timeout", "0.1", "--start-delay", "20",
                            "--record-namespace", f"/{node.namespace}", "--topics", sample_bag.COLOR_TOPIC,
                            "--remap", f"{sample_bag.COLOR_TOPIC}:=/{node.namespace}/image")
    finally:
        client.close()
        node.stop()
    assert result.returncode == 0, result.stderr
    note, *timeouts, summary = result.stderr.splitlines()
    assert "the node has no standing queries" in note
    assert len(timeouts) == FRAMES and "frame 2 on /camera/color/image_raw (t=0.100 s" in timeouts[1]
    assert "no output within --frame-timeout 0.1 s" in timeouts[1]
    assert summary.endswith(f"lockstep: {FRAMES} of {FRAMES} frames got no output within --frame-timeout 0.1 s")


# --- bags that cannot be (fully) replayed ------------------------------------------------


def write_custom_type_bag(path: Path) -> None:
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg("float64 level\nstring note", "replay_test_msgs/msg/Gauge"))
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        gauge = writer.add_connection("/gauge", "replay_test_msgs/msg/Gauge", typestore=store)
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        types = store.types
        writer.write(gauge, 1, store.serialize_cdr(types["replay_test_msgs/msg/Gauge"](level=1.0, note="x"),
                                                   "replay_test_msgs/msg/Gauge"))
        writer.write(chatter, 2, store.serialize_cdr(types["std_msgs/msg/String"](data="hi"),
                                                     "std_msgs/msg/String"))


def test_unsupported_message_type_is_refused_before_publishing(tmp_path):
    bag = tmp_path / "custom"
    write_custom_type_bag(bag)
    for args in (["--topics", "/gauge"], []):
        result = run_replay(str(bag), "--start-delay", "0", *args)
        assert result.returncode == 1
        line, = result.stderr.splitlines()
        assert "/gauge" in line and "replay_test_msgs/msg/Gauge" in line and "--topics" in line
    assert run_replay(str(bag), "--start-delay", "0", "--topics", "/chatter").returncode == 0


def replay_color_frames(listener, bag: Path, topic: str, expected: int) -> tuple[subprocess.CompletedProcess, list]:
    """Replay the sample bag's color frames onto `topic`; the tool's result and the stamps received
    once `expected` frames came (or 5 s passed)."""
    received, subscription = listener.collect(Image, topic, stamp_ns)
    try:
        result = run_replay(str(bag), "--rate", "10", "--start-delay", "20", "--topics", sample_bag.COLOR_TOPIC,
                            "--remap", f"{sample_bag.COLOR_TOPIC}:={topic}")
        assert wait_until(lambda: len(received) >= expected, 5.0)
    finally:
        listener.node.destroy_subscription(subscription)
    return result, received


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_bag_publishes_what_is_readable_then_fails(listener, bags, truth, storage, tmp_path):
    bag = tmp_path / "cut"
    shutil.copytree(bags[storage], bag)
    storage_file, = [f for f in bag.iterdir() if f.suffix in (".mcap", ".db3")]
    os.truncate(storage_file, storage_file.stat().st_size // 2)
    with BagReader(bag) as reader:
        readable = reader.topics[sample_bag.COLOR_TOPIC].count
    assert 0 < readable < FRAMES

    result, received = replay_color_frames(listener, bag, f"/cut_{storage}/image", readable)
    assert result.returncode == 1
    line, = result.stderr.splitlines()
    assert "damaged" in line and str(bag) in line
    assert received == [frame["stamp_ns"] for frame in truth["frames"][:readable]]


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_that_lost_its_metadata_replays_whole_with_a_note(listener, bags, truth, storage, tmp_path):
    # A recorder killed before it wrote metadata.yaml leaves whole storage files: nothing is lost.
    bag = tmp_path / "no_metadata"
    shutil.copytree(bags[storage], bag)
    (bag / "metadata.yaml").unlink()
    result, received = replay_color_frames(listener, bag, f"/nometa_{storage}/image", FRAMES)
    assert result.returncode == 0, result.stderr
    line, = result.stderr.splitlines()
    assert "note" in line and "read to its end" in line and "ros2 bag reindex" in line and "damaged" not in line
    assert received == [frame["stamp_ns"] for frame in truth["frames"]]


def test_loop_runs_until_sigint_and_leaves_a_readable_recording(bags, tmp_path):
    recorded_path = tmp_path / "looped"
    process = subprocess.Popen(
        [replay_executable(), str(bags["mcap"]), "--loop", "--rate", "10", "--progress", "--start-delay", "0",
         "--topics", sample_bag.COLOR_TOPIC, "--remap", f"{sample_bag.COLOR_TOPIC}:=/loop/image",
         "--record", str(recorded_path)],
        env=node_env(), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        # A pass takes 0.3 s at --rate 10; the second progress report comes a second into playing.
        assert wait_until(lambda: len(lines) >= 2, 30.0), lines
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=5)
    assert all(line.startswith("replay ") and "bag time" in line for line in lines), lines
    images = read_bag(recorded_path)["/loop/image"]
    assert len(images) > FRAMES  # more than one pass, every pass complete up to the stop
    assert [stamp_ns(msg) for _, msg in images[:FRAMES + 1]] == [
        sample_bag.START_NS + i * 100_000_000 for i in range(FRAMES)] + [sample_bag.START_NS]


def test_bad_arguments_exit_2(bags):
    result = run_replay(str(bags["mcap"]), "--remap", "/camera/color/image_raw")
    assert result.returncode == 2 and "FROM:=TO" in result.stderr
    for args in (["--rate", "0"], ["--start-delay", "-1"], ["--topics", "bad topic"], ["--frame-timeout", "5"],
                 ["--lockstep", "--frame-timeout", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            replay.parse_args([str(bags["mcap"]), *args])
        assert exit_info.value.code == 2


def test_unknown_topic_names_the_bag_topics(bags):
    result = run_replay(str(bags["mcap"]), "--topics", "/nope", "--start-delay", "0")
    assert result.returncode == 1
    assert "/nope" in result.stderr and sample_bag.COLOR_TOPIC in result.stderr


def test_bag_reader_lists_topics_and_refuses_missing_bags(bags, tmp_path):
    with BagReader(bags["sqlite3"]) as reader:
        assert {t.name: (t.msgtype, t.count) for t in reader.topics.values()} == {
            sample_bag.COLOR_TOPIC: ("sensor_msgs/msg/Image", FRAMES),
            sample_bag.DEPTH_TOPIC: ("sensor_msgs/msg/Image", FRAMES),
            sample_bag.INFO_TOPIC: ("sensor_msgs/msg/CameraInfo", FRAMES)}
        stamps = [m.timestamp_ns for m in reader.messages([sample_bag.INFO_TOPIC, sample_bag.COLOR_TOPIC])]
        assert stamps == sorted(stamps) and len(stamps) == 2 * FRAMES
    with pytest.raises(ReplayError, match="does not exist"):
        BagReader(tmp_path / "missing")
