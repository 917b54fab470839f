"""The README's commands, run as a ROS 2 user types them: `ros2 launch`, `ros2 run`,
`ros2 service call`, `ros2 param set`, `ros2 lifecycle set`.

Commands are read from README.md at test time (readme_commands.py), so a command that
changes there changes what runs here. Only what a test machine cannot have is swapped:
the model (every node gets the test backend ColorBackend through its `backend`
parameter: README's models need a download) and file paths (README's /tmp paths and bag
placeholders go to the test's temporary folder). Needs ros2cli and launch from a ROS 2
install or the .ros2-tools overlay; skipped without them, except in CI.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from xml.etree import ElementTree

import numpy as np
import pytest
import rclpy
import yaml
from plugin_backends import paint
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from readme_commands import commands, launch_arguments, lines, ros_arg
from ros2_cli import Background, Ros2Daemon, require_tool, run
from ros_harness import TestClient, wait_until
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import CameraInfo, Image
from vlm_perception_msgs.msg import StandingQueries

from vlm_perception.core.images import encode_image_fields
from vlm_perception.core.queries import parse_query

pytestmark = pytest.mark.integration

TEST_BACKEND = "plugin_backends:ColorBackend"
# The test backend sees colours, not photos: like the model, the sample bag's scene is swapped for
# the flat-coloured shapes (the default photo scene is checked with the offline backend by test_demo).
SHAPES_SCENE = ["--scene", "shapes"]
SHAPES_OBJECTS = ["apple", "banana", "cup"]
SEEN = "apple"  # the one object painted into the camera frames below
# What the README's `ros2 lifecycle set` transitions lead to.
STATE_AFTER = {"configure": "inactive", "activate": "active", "deactivate": "inactive", "cleanup": "unconfigured"}
# How a parameter set with `ros2 param set` shows on the latched ~/standing_queries.
REPLAY_FINISHED = re.compile(r"\[vlm_perception_replay-\d+\]: process has finished cleanly")
PARAM_EFFECTS: dict[str, Callable[[StandingQueries, str], bool]] = {
    "queries": lambda msg, value: list(msg.queries) == yaml.safe_load(value),
    "threshold": lambda msg, value: abs(msg.threshold - float(value)) < 1e-6,
    "rate_hz": lambda msg, value: abs(msg.rate_hz - float(value)) < 1e-6,
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[Ros2Daemon]:
    require_tool("ros2")
    with Ros2Daemon() as started:
        yield started


def with_test_backend(argv: Sequence[str]) -> list[str]:
    """The command with the model swapped for the test backend (a launch argument or a ROS parameter)."""
    argv = [arg for arg in argv if not arg.startswith("backend:=")]
    if argv[1] == "launch":
        return [*argv, f"backend:={TEST_BACKEND}"]
    return [*argv, *([] if "--ros-args" in argv else ["--ros-args"]), "-p", f"backend:={TEST_BACKEND}"]


def local_paths(argv: Sequence[str], tmp: Path, bag: Path) -> list[str]:
    """README's /tmp paths under `tmp`, its bag placeholders replaced by `bag`."""
    def local(arg: str) -> str:
        name, sep, value = arg.rpartition(":=")
        if value in ("BAG", "/path/to/bag"):
            return f"{name}{sep}{bag}"
        if value.startswith("/tmp/"):
            return f"{name}{sep}{tmp / value[len('/tmp/'):]}"
        return arg
    return [local(arg) for arg in argv]


class Camera:
    """Publishes a frame showing an apple on `topic` at 10 Hz (best effort, as camera drivers do)."""

    def __init__(self, topic: str) -> None:
        self.node = rclpy.create_node(f"readme_camera_{id(self)}")
        publisher = self.node.create_publisher(Image, topic, qos_profile_sensor_data)
        frame = Image(**encode_image_fields(paint(np.zeros((120, 160, 3), np.uint8), SEEN, (40, 30, 80, 70)),
                                            "rgb8"))

        def publish() -> None:
            frame.header.stamp = self.node.get_clock().now().to_msg()
            publisher.publish(frame)

        self.node.create_timer(0.1, publish)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def stop_cleanly(process: Background) -> None:
    process.stop()
    assert "process has died" not in process.output, process.output


def wait_answering(client: TestClient, timeout: float = 60.0) -> None:
    """Until the node answers from a camera frame (service up, frames arriving)."""
    assert client.wait_for_service(timeout), "the node's query service never came up"
    client.handshake()
    assert wait_until(lambda: client.query(SEEN).success, timeout, period=0.5), "the node never answered"


def test_ros2_launch_of_the_node_launch_file(ros):
    require_tool("ros2")
    launches = [argv for argv in commands("ros2", "launch", "vlm_perception") if argv[3] == "vlm_perception.launch.py"]
    assert launches, "README shows no `ros2 launch vlm_perception vlm_perception.launch.py`"
    for argv in launches:
        args = launch_arguments(argv)
        namespace = args.get("namespace", "").strip("/")
        node_name = f"/{namespace}/vlm_perception" if namespace else "/vlm_perception"

        def topic(name: str) -> str:
            value = args.get(name, name)
            return value if value.startswith("/") else f"/{namespace}/{value}" if namespace else f"/{value}"

        launch = Background(with_test_backend(argv))
        camera = Camera(topic("image"))
        client = TestClient(node_name)
        try:
            wait_answering(client)
            [apple] = client.query(SEEN).presence
            assert apple.present
            # image_qos auto subscribes an input once it has a publisher: the driver's depth and camera_info too.
            client.node.create_publisher(Image, topic("depth"), qos_profile_sensor_data)
            client.node.create_publisher(CameraInfo, topic("camera_info"), 10)
            for name in ("image", "depth", "camera_info"):  # the remapped inputs
                assert wait_until(lambda: client.node.count_subscribers(topic(name)) > 0, 10.0), topic(name)
        finally:
            client.close()
            camera.close()
            stop_cleanly(launch)


def node_run_command() -> list[str]:
    """The README's `ros2 run` of the node. Not its SROS2 variant (`--enclave`): the PyPI wheels' Fast DDS
    has no security plugins, as the README says (test_node_security.py checks that the node refuses to start)."""
    [argv] = [argv for argv in commands("ros2", "run", "vlm_perception", "vlm_perception_node")
              if "--enclave" not in argv]
    return argv


def test_ros2_run_then_service_call_and_param_set(ros, daemon):
    run_node = node_run_command()
    node = Background(with_test_backend(run_node))
    camera = Camera(ros_arg(run_node, "-r", "image"))
    client = TestClient("/vlm_perception")
    standing: list[StandingQueries] = []
    client.node.create_subscription(StandingQueries, "/vlm_perception/standing_queries", standing.append,
                                    QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        wait_answering(client)
        calls = commands("ros2", "service", "call")
        assert calls, "README shows no `ros2 service call`"
        for argv in calls:
            assert argv[3] == "/vlm_perception/query", argv
            result = run(argv)
            assert result.returncode == 0 and "success=True" in result.stdout, result.stdout + result.stderr
            for phrase in parse_query(yaml.safe_load(argv[5])["query"]).phrases:
                assert f"query='{phrase}', present={phrase == SEEN}" in result.stdout, result.stdout
        sets = commands("ros2", "param", "set")
        assert sets, "README shows no `ros2 param set`"
        daemon.wait_for_node("/vlm_perception")  # `ros2 param set` looks the node up through the daemon
        for argv in sets:
            node_name, name, value = argv[3:6]
            assert node_name == "/vlm_perception" and name in PARAM_EFFECTS, f"no effect check for {argv}"
            result = run(argv)
            assert "Set parameter successful" in result.stdout, result.stdout + result.stderr
            assert wait_until(lambda: bool(standing) and PARAM_EFFECTS[name](standing[-1], value), 10.0), \
                f"{name} := {value} did not take effect: {standing[-1] if standing else None}"
    finally:
        client.close()
        camera.close()
        stop_cleanly(node)


def test_ros2_lifecycle_set_brings_up_a_node_launched_with_autostart_false(ros, daemon):
    sets = commands("ros2", "lifecycle", "set")
    assert sets, "README shows no `ros2 lifecycle set`"
    node_name = sets[0][3]
    launch = Background(with_test_backend(["ros2", "launch", "vlm_perception", "vlm_perception.launch.py",
                                           "autostart:=false"]))
    client = TestClient(node_name)
    try:
        assert client.wait_for_service(60.0)
        daemon.wait_for_node(node_name)
        assert client.lifecycle_state() == "unconfigured"
        for argv in sets:
            result = run(argv)
            assert "Transitioning successful" in result.stdout, result.stdout + result.stderr
            state = run(["ros2", "lifecycle", "get", argv[3]]).stdout
            assert state.startswith(STATE_AFTER[argv[4]] + " ["), state
        if client.lifecycle_state() == "active":
            client.handshake()
            assert "no frame received" in client.query(SEEN).message  # active and serving
    finally:
        client.close()
        stop_cleanly(launch)


def recorded_presence(bag: Path) -> list[Any]:
    with AnyReader([bag]) as reader:
        presence = [c for c in reader.connections if c.topic.endswith("/presence")]
        return [reader.deserialize(data, conn.msgtype) for conn, _, data in reader.messages(connections=presence)]


def test_ros2_run_of_the_bag_tools(ros, tmp_path):
    """The README's bag tools block in order (sample bag, replay into a running node, report),
    each through `ros2 run vlm_perception`, with the README's node on bag time as it says."""
    require_tool("ros2")
    tools = [argv for name in ("sample_bag", "replay", "report") for argv in commands(f"vlm_perception_{name}")]
    tools.sort(key=lambda argv: ("vlm_perception_sample_bag", "vlm_perception_replay",
                                 "vlm_perception_report").index(argv[0]))
    assert len({argv[0] for argv in tools}) == 3, tools
    bag = tmp_path / "sample"
    # The scored report needs the node's standing queries to be the labelled objects, as the README says.
    node = Background(with_test_backend([*node_run_command(), "-p", "use_sim_time:=true",
                                         "-p", f"queries:=[{', '.join(SHAPES_OBJECTS)}]"]))
    try:
        assert node.wait_for_output("active:", 60.0), node.output
        for argv in tools:
            command = ["ros2", "run", "vlm_perception", *local_paths(argv, tmp_path, bag)]
            if argv[0] == "vlm_perception_sample_bag":
                command += SHAPES_SCENE
            if "--loop" in argv:
                check_looping_replay(command)
                continue
            result = run(command, timeout=180)
            assert result.returncode == 0, result.stdout + result.stderr
            if argv[0] == "vlm_perception_sample_bag":
                bag = Path(command[4])
                assert (bag / "ground_truth.json").is_file()
            elif argv[0] == "vlm_perception_replay":
                presence = recorded_presence(Path(command[command.index("--record") + 1]))
                assert presence and all(r.present for msg in presence for r in msg.results if r.query == SEEN)
            elif "--labels" in argv:
                # The README's scored report: every labelled query scored, the JUnit file written.
                junit = ElementTree.parse(Path(command[command.index("--junit") + 1])).getroot()
                assert sorted(case.get("name") for case in junit.iter("testcase")) == SHAPES_OBJECTS, result.stdout
                assert all(re.search(rf"^{name}\s+\d\.\d{{3}}", result.stdout, re.M) for name in SHAPES_OBJECTS), \
                    result.stdout
            else:
                out = Path(command[command.index("--out") + 1])
                assert re.search(r"presence on /vlm_perception/presence", result.stdout), result.stdout
                assert (out / "presence.png").is_file() and (out / "contact_sheet.png").is_file()
    finally:
        stop_cleanly(node)


def check_looping_replay(command: list[str]) -> None:
    """A --loop replay runs until Ctrl-C, publishing to its remapped topic all along."""
    target = command[command.index("--remap") + 1].split(":=", 1)[1]
    listener = rclpy.create_node(f"readme_listener_{id(command)}")
    received: list[Image] = []
    listener.create_subscription(Image, target, received.append, qos_profile_sensor_data)
    replay = Background(command)
    try:
        deadline = time.monotonic() + 60.0
        while len(received) < 5 and time.monotonic() < deadline and replay.process.poll() is None:
            rclpy.spin_once(listener, timeout_sec=0.1)
        assert len(received) >= 5, f"{len(received)} frames on {target}:\n{replay.output}"
    finally:
        replay.stop()
        listener.destroy_node()


def test_ros2_launch_of_the_replay_launch_file(ros, tmp_path):
    require_tool("ros2")
    [make_bag] = commands("vlm_perception_sample_bag")
    bag = tmp_path / "sample"
    assert run(["ros2", "run", "vlm_perception", make_bag[0], str(bag), *SHAPES_SCENE], timeout=120).returncode == 0
    launches = [argv for argv in commands("ros2", "launch", "vlm_perception") if argv[3] == "replay.launch.py"]
    assert launches, "README shows no `ros2 launch vlm_perception replay.launch.py`"
    for argv in launches:
        command = with_test_backend(local_paths(argv, tmp_path, bag))
        record = Path(launch_arguments(command)["record"])
        launch = Background(command)
        try:
            # The replay tool ends when the bag has been played (10 s); the node keeps running until Ctrl-C.
            assert wait_until(lambda: REPLAY_FINISHED.search(launch.output), 120.0, period=0.5), launch.output
        finally:
            stop_cleanly(launch)
        presence = recorded_presence(record)
        assert presence and all(r.present for msg in presence for r in msg.results if r.query == SEEN)


def test_exports_that_ask_ros2_pkg_prefix_name_installed_files():
    """Lines such as `export FASTDDS_DEFAULT_PROFILES_FILE=$(ros2 pkg prefix vlm_perception)/...`."""
    require_tool("ros2")
    exports = [line for line in lines() if line.startswith("export ") and "$(ros2 " in line]
    assert exports, "README shows no export using `ros2 pkg prefix`"
    for line in exports:
        variable = line.split()[1].split("=", 1)[0]
        result = run(["bash", "-c", f'{line.split("#", 1)[0]}\nprintf %s "${variable}"'])
        assert result.returncode == 0 and Path(result.stdout).is_file(), f"{line}: {result.stdout!r} {result.stderr}"
