"""Nothing silently lost, over DDS with a user's default environment (no Fast DDS profile for the node):
raw frames from reliable and best-effort publishers (image_qos auto), a replay of raw HD frames,
a burst of 300 service calls, and the diagnosis when frames stop."""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from camera_driver import ReceivedFrames, published, start_driver
from ros_harness import node_env, node_executable, publish_frame, start, wait_answerable, wait_until
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from vlm_perception_msgs.srv import QueryScene

pytestmark = pytest.mark.integration
COLOR = "plugin_backends:ColorBackend"
SIZES = {"vga": (640, 480), "hd": (1280, 720)}
FRAMES, RATE_HZ = 20, 10.0
# Best effort promises nothing: on a busy machine even a frame that fits in shared memory may be
# dropped. Without the large-image profile most large frames are lost (bench_delivery.py).
BEST_EFFORT_MIN = FRAMES - 2


def test_raw_frames_from_reliable_and_best_effort_publishers_reach_the_node(ros):
    # One camera per publisher, so each is a first publisher that auto QoS follows.
    cameras = {f"{reliability}_{size}": (reliability, size)
               for reliability in ("reliable", "best_effort") for size in SIZES}
    node, client = start({"backend": COLOR, "cameras": list(cameras), "rate_hz": 0.0, "max_image_age": 0.0})
    received = ReceivedFrames(client.node, node.prefix)
    try:
        for camera, (reliability, size) in cameras.items():
            # A best-effort driver's raw frames reach another process only from a driver that loads
            # the large-image profile (README "Large images over DDS"); this one stands for such a
            # driver. The reliable one runs as drivers do by default: no profile.
            driver = start_driver(f"{node.namespace}/{camera}/image", *SIZES[size], RATE_HZ, FRAMES,
                                  reliability, large_image_profile=reliability == "best_effort", env=node_env())
            assert published(driver, 60.0) == FRAMES
            expected = FRAMES if reliability == "reliable" else BEST_EFFORT_MIN
            assert expected <= received.settled(camera) <= FRAMES, (camera, node.output)
            chosen = "reliable" if reliability == "reliable" else "best effort"
            assert f"image_qos auto: subscribed to /{node.namespace}/{camera}/image {chosen}" in node.output
    finally:
        client.close()
        node.stop()


def write_raw_bag(path: Path, topic: str, width: int, height: int, frames: int, rate_hz: float) -> None:
    store = get_typestore(Stores.ROS2_JAZZY)
    image_type = store.types["sensor_msgs/msg/Image"]
    header_type, time_type = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    data = np.random.default_rng(0).integers(0, 255, width * height * 3, np.uint8)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for i in range(frames):
            ns = 1_700_000_000_000_000_000 + int(i * 1e9 / rate_hz)
            msg = image_type(header=header_type(stamp=time_type(sec=ns // 10**9, nanosec=ns % 10**9),
                                                frame_id="camera_optical"),
                             height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                             data=data)
            writer.write(connection, ns, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


@pytest.mark.parametrize("image_qos", ["auto", "sensor_data"])
def test_replay_of_raw_hd_frames_delivers_every_frame(ros, tmp_path, image_qos):
    # sensor_data too: a best-effort subscription gets every frame because the replay loads the
    # large-image profile for its own process, with nothing exported.
    bag = tmp_path / "hd"
    write_raw_bag(bag, "/camera/image_raw", 1280, 720, FRAMES, RATE_HZ)
    # The test client's own (idle) image publisher is reliable too, so auto follows the replay's.
    node, client = start({"backend": COLOR, "rate_hz": 0.0, "max_image_age": 0.0, "image_qos": image_qos},
                         image_qos="reliable")
    received = ReceivedFrames(client.node, node.prefix)
    try:
        replay = str(Path(node_executable()).with_name("vlm_perception_replay"))
        result = subprocess.run([replay, str(bag), "--no-clock", "--start-delay", "20",
                                 "--remap", f"/camera/image_raw:=/{node.namespace}/image"],
                                env=node_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        # auto subscribes reliable: every frame; sensor_data best effort: see BEST_EFFORT_MIN.
        expected = FRAMES if image_qos == "auto" else BEST_EFFORT_MIN
        assert expected <= received.settled("default") <= FRAMES, node.output
        if image_qos == "auto":
            assert f"subscribed to /{node.namespace}/image reliable" in node.output
    finally:
        client.close()
        node.stop()


def test_a_burst_of_300_calls_from_three_clients_is_answered_in_order_from_the_newest_frame(ros):
    node, client = start({"backend": COLOR, "rate_hz": 0.0, "max_image_age": 0.0})
    callers = [client.node.create_client(QueryScene, f"{node.prefix}/query") for _ in range(3)]
    streaming = threading.Event()
    try:
        assert all(caller.wait_for_service(timeout_sec=10.0) for caller in callers)
        wait_answerable(client, np.zeros((240, 320, 3), np.uint8))
        stamps = []

        def stream() -> None:  # new frames while the burst is answered
            while not streaming.wait(0.05):
                stamps.append(publish_frame(client, np.zeros((240, 320, 3), np.uint8)).header.stamp)

        streamer = threading.Thread(target=stream)
        streamer.start()
        done: list[list[int]] = [[] for _ in callers]
        lock = threading.Lock()

        def on_done(caller: int, index: int) -> None:
            with lock:
                done[caller].append(index)

        futures = []
        for index in range(100):
            for number, caller in enumerate(callers):
                future = caller.call_async(QueryScene.Request(query="apple"))
                future.add_done_callback(lambda _, c=number, i=index: on_done(c, i))
                futures.append((number, index, future))
        assert wait_until(lambda: all(f.done() for _, _, f in futures), 120.0), \
            f"answered {sum(f.done() for _, _, f in futures)} of {len(futures)}"
        streaming.set()
        streamer.join()
        assert all(f.result().success for _, _, f in futures), [f.result().message for _, _, f in futures][:3]
        # Each client's calls are answered in the order it sent them...
        assert done == [list(range(100))] * 3
        # ...each from the newest frame when it ran: never an older one than a call answered before.
        for number in range(3):
            answered = [f.result().image_stamp for c, _, f in sorted(futures, key=lambda t: t[1]) if c == number]
            ns = [s.sec * 10**9 + s.nanosec for s in answered]
            assert ns == sorted(ns)
        assert len({(s.sec, s.nanosec) for _, _, f in futures for s in [f.result().image_stamp]}) > 1, \
            "the frames streamed during the burst were never used"
    finally:
        streaming.set()
        for caller in callers:
            client.node.destroy_client(caller)
        client.close()
        node.stop()


def test_frames_that_stop_after_flowing_are_diagnosed_in_the_log_and_diagnostics(ros):
    node, client = start({"backend": COLOR, "rate_hz": 0.0, "max_image_age": 0.0})
    received = ReceivedFrames(client.node, node.prefix)
    try:
        rgb = np.zeros((240, 320, 3), np.uint8)
        assert wait_until(lambda: publish_frame(client, rgb) is not None and (received.count("default") or 0) > 3,
                          15.0, period=0.1)
        # The camera's publisher stays, its frames stop.
        stopped = "are still there but their frames stopped"
        assert node.wait_for_output(stopped, 15.0), node.output
        line = next(line for line in node.output.splitlines() if stopped in line)
        assert f"camera 'default': no frame on /{node.namespace}/image for" in line and "ros2 topic hz" in line
        assert wait_until(lambda: stopped in received.message("default"), 10.0), received.message("default")
        # The publisher leaves: a new problem is said at once.
        client.node.destroy_publisher(client.image_pub)
        assert node.wait_for_output("its publisher(s) left the topic", 15.0), node.output
    finally:
        client.close()
        node.stop()
