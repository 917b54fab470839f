"""Bags written by other tools replay through the real node with the right answer on every frame.

- A bare .mcap written by Foxglove's `mcap-ros2-support` (its own CDR serializer, no rosbag2
  metadata, so no offered QoS): raw rgb8 640x480 frames, and the same as PNG CompressedImage.
- rosbag2 directories that `rosbags` writes with zstd file compression (.mcap.zstd, .db3.zstd),
  per-message compression and none, MCAP and sqlite3.

The frames are the sample bag's (see test_replay.py), whose objects ColorBackend finds exactly, so
each ~/presence the node publishes is checked against the ground truth of its frame. The replay
tool runs with the environment a user has: no Fast DDS profile.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from mcap_ros2.writer import Writer as Ros2McapWriter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import NodeProcess, TestClient, node_env, start, wait_until
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image
from test_replay import read_bag, replay_executable, stamp_ns

from vlm_perception.bag import sample_bag
from vlm_perception.bag.bagfile import BagReader
from vlm_perception.core.frames import stamp_to_ns
from vlm_perception.core.errors import ReplayError
from vlm_perception.core.images import encode_image_fields

pytestmark = pytest.mark.integration
QUERIES = ["apple", "banana", "cup"]
FRAMES = 30
SCALE = 2  # the sample bag's 320x240 frames, enlarged to 640x480 for the bare MCAP files
NODE_PARAMS = {"backend": "plugin_backends:ColorBackend", "queries": QUERIES, "rate_hz": 40.0,
               "max_image_age": 0.0, "image_qos": "reliable"}


def user_env() -> dict[str, str]:
    """The test environment without the large-image profile the harness exports."""
    env = node_env()
    for variable in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(variable, None)
    return env


def run_replay(bag: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([replay_executable(), str(bag), "--start-delay", "20", *args], env=user_env(),
                          capture_output=True, text=True, timeout=120)


def msgdef(msgtype: str) -> str:
    """The definition text a ROS 2 recorder stores: the type, then each nested type after a separator."""
    return get_typestore(Stores.ROS2_JAZZY).generate_msgdef(msgtype, ros_version=2)[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_bag.write_sample_bag(tmp_path_factory.mktemp("source") / "bag", 3.0, 10.0, "mcap", scene="shapes")


@pytest.fixture(scope="module")
def truth(source: Path) -> list[dict[str, Any]]:
    frames = sample_bag.load_ground_truth(source)["frames"]
    assert len(frames) == FRAMES
    return frames


@pytest.fixture(scope="module")
def color_frames(source: Path) -> list[tuple[Any, np.ndarray]]:
    """(header, rgb) of each color image of the sample bag."""
    frames = []
    with AnyReader([source]) as reader:
        connections = [c for c in reader.connections if c.topic == sample_bag.COLOR_TOPIC]
        for conn, _, data in reader.messages(connections):
            msg = reader.deserialize(data, conn.msgtype)
            frames.append((msg.header, msg.data.reshape(msg.height, msg.width, 3)))
    return frames


def write_bare_mcap(path: Path, frames: list[tuple[Any, np.ndarray]], compressed: bool) -> Path:
    """One .mcap file as Foxglove's writer makes it, frames enlarged SCALE times (nearest neighbour)."""
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with path.open("wb") as stream:
        writer = Ros2McapWriter(stream)
        schema = writer.register_msgdef(msgtype, msgdef(msgtype))
        for header, rgb in frames:
            big = np.repeat(np.repeat(rgb, SCALE, axis=0), SCALE, axis=1)
            ros_header = {"stamp": {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec},
                          "frame_id": header.frame_id}
            if compressed:  # PNG: lossless, so the colours stay exact
                message = {"header": ros_header, "format": "rgb8; png compressed bgr8",
                           "data": cv2.imencode(".png", big[:, :, ::-1])[1].tobytes()}
            else:
                message = {"header": ros_header, **encode_image_fields(big, "rgb8")}
            writer.write_message(sample_bag.COLOR_TOPIC, schema, message, log_time=stamp_to_ns(header.stamp))
        writer.finish()
    return path


def rewrite(source: Path, out: Path, storage: StoragePlugin, compression: CompressionMode) -> Path:
    """The source bag's messages, as they are, in a new rosbag2 written by rosbags."""
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=storage)
    if compression != CompressionMode.NONE:
        writer.set_compression(compression, CompressionFormat.ZSTD)
    with AnyReader([source]) as reader, writer:
        connections = {conn.id: writer.add_connection(conn.topic, conn.msgtype, msgdef=conn.msgdef.data,
                                                      rihs01=conn.digest)
                       for conn in reader.connections}
        for conn, timestamp, data in reader.messages():
            writer.write(connections[conn.id], timestamp, data)
    return out


@pytest.fixture(scope="module")
def raw_node(ros) -> Iterator[tuple[NodeProcess, TestClient]]:
    node, client = start(dict(NODE_PARAMS), subscribe_outputs=False, image_qos="reliable")
    yield node, client
    client.close()
    node.stop()


def replay_through_node(node: NodeProcess, bag: Path, image_topic: str, tmp_path: Path) -> dict[str, list]:
    """Replay the bag's color images into the node in lockstep; the recorded inputs and outputs."""
    namespace = f"/{node.namespace}"
    recorded = tmp_path / "recorded"
    # Lockstep: each frame waits for the node's standing-query answer, so a loaded machine skips none.
    result = run_replay(bag, "--lockstep", "--topics", sample_bag.COLOR_TOPIC,
                        "--remap", f"{sample_bag.COLOR_TOPIC}:={namespace}/{image_topic}",
                        "--record", str(recorded), "--record-namespace", namespace)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return read_bag(recorded)


def assert_every_frame_answered(recorded: dict[str, list], node: NodeProcess, truth: list[dict[str, Any]],
                                scale: int) -> None:
    presence = recorded[f"{node.prefix}/presence"]
    assert len(presence) == FRAMES, node.output
    for frame, (_, answer) in zip(truth, presence):
        assert stamp_ns(answer) == frame["stamp_ns"]
        assert {r.query: r.present for r in answer.results} == {
            name: frame["objects"][name]["present"] for name in QUERIES}
    targets = recorded[f"{node.prefix}/grasp_targets"]
    assert len(targets) == FRAMES
    for frame, (_, answer) in zip(truth, targets):
        boxes = {t.query: [round(t.center_u - t.width_px / 2), round(t.center_v - t.height_px / 2),
                           round(t.center_u + t.width_px / 2), round(t.center_v + t.height_px / 2)]
                 for t in answer.targets}
        assert boxes == {name: [scale * v for v in obj["box"]]
                         for name, obj in frame["objects"].items() if obj["present"]}


def test_bare_mcap_of_raw_640x480_frames_is_answered_on_every_frame(raw_node, color_frames, truth, tmp_path):
    bag = write_bare_mcap(tmp_path / "foxglove.mcap", color_frames, compressed=False)
    node, _ = raw_node
    recorded = replay_through_node(node, bag, "image", tmp_path)
    assert len(recorded[f"/{node.namespace}/image"]) == FRAMES
    assert_every_frame_answered(recorded, node, truth, SCALE)


def test_bare_mcap_of_compressed_frames_is_answered_on_every_frame(ros, color_frames, truth, tmp_path):
    bag = write_bare_mcap(tmp_path / "foxglove.mcap", color_frames, compressed=True)
    node, client = start({**NODE_PARAMS, "image_transport": "compressed"}, subscribe_outputs=False,
                         image_qos="reliable")
    try:
        recorded = replay_through_node(node, bag, "image/compressed", tmp_path)
    finally:
        client.close()
        node.stop()
    assert_every_frame_answered(recorded, node, truth, SCALE)


@pytest.mark.parametrize("storage, compression", [
    (StoragePlugin.MCAP, CompressionMode.FILE), (StoragePlugin.MCAP, CompressionMode.MESSAGE),
    (StoragePlugin.SQLITE3, CompressionMode.FILE), (StoragePlugin.SQLITE3, CompressionMode.NONE)],
    ids=["mcap-zstd-file", "mcap-zstd-message", "sqlite3-zstd-file", "sqlite3-plain"])
def test_rosbags_written_bag_is_answered_on_every_frame(raw_node, source, truth, storage, compression,
                                                        tmp_path):
    bag = rewrite(source, tmp_path / "bag", storage, compression)
    node, _ = raw_node
    assert_every_frame_answered(replay_through_node(node, bag, "image", tmp_path), node, truth, 1)


def test_burst_of_raw_hd_frames_reaches_a_reliable_subscriber_whole(raw_node, tmp_path):
    # mcap-ros2-support stamps a message with the time it was written unless told otherwise, so such
    # a bag replays as a burst: a reliable subscriber must still get every frame, the last included.
    bag = tmp_path / "burst.mcap"
    with bag.open("wb") as stream:
        writer = Ros2McapWriter(stream)
        schema = writer.register_msgdef("sensor_msgs/msg/Image", msgdef("sensor_msgs/msg/Image"))
        for index in range(FRAMES):
            fields = encode_image_fields(np.full((720, 1280, 3), index, np.uint8), "rgb8")
            writer.write_message("/burst/image", schema, {
                "header": {"stamp": {"sec": index, "nanosec": 0}, "frame_id": "camera"}, **fields})
        writer.finish()
    _, client = raw_node
    received: list[int] = []
    subscription = client.node.create_subscription(
        Image, f"/burst_{os.getpid()}/image", lambda msg: received.append(msg.header.stamp.sec),
        QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=FRAMES, reliability=ReliabilityPolicy.RELIABLE))
    try:
        result = run_replay(bag, "--remap", f"/burst/image:=/burst_{os.getpid()}/image")
        assert result.returncode == 0, result.stderr
        assert wait_until(lambda: len(received) == FRAMES, 5.0), sorted(set(range(FRAMES)) - set(received))
    finally:
        client.node.destroy_subscription(subscription)
    assert received == list(range(FRAMES))


@pytest.mark.parametrize("chunked", [True, False], ids=["zstd-chunks", "bare-records"])
def test_cut_mcap_file_yields_whole_messages_then_says_it_is_damaged(tmp_path, chunked):
    # A file whose writer never finished (no summary) is scanned record by record; a message the
    # cut falls into must not come out shortened, whether it sits in a chunk or on its own.
    rng = np.random.default_rng(3)  # incompressible, so the messages fill the file, not its summary
    payloads = [rng.integers(0, 256, 5000, np.uint8).tobytes() for _ in range(20)]
    path = tmp_path / "cut.mcap"
    with path.open("wb") as stream:
        writer = McapWriter(stream, compression=CompressionType.ZSTD, use_chunking=chunked, chunk_size=12_000)
        writer.start("ros2", "test")
        channel = writer.register_channel("/chatter", "cdr", writer.register_schema(
            "std_msgs/msg/String", "ros2msg", msgdef("std_msgs/msg/String").encode()))
        for index, payload in enumerate(payloads):
            writer.add_message(channel, log_time=index, publish_time=index, data=payload)
        writer.finish()
    whole = path.read_bytes()
    for cut in range(len(whole) // 4, len(whole) * 3 // 4, 1013):
        path.write_bytes(whole[:cut])
        received = []
        with BagReader(path) as reader, pytest.raises(ReplayError, match="damaged.*truncated"):
            received.extend(msg.data for msg in reader.messages(["/chatter"]))
        assert 0 < len(received) < len(payloads) and received == payloads[:len(received)], cut
