"""A camera driver in its own process, and the node's frame count, for delivery tests and the bench.

    python camera_driver.py TOPIC --size 1280x720 --rate 30 --count 90 --reliability best_effort

The driver publishes raw rgb8 frames once the node's subscription has
matched (so what is measured is delivery, not discovery), keeps its
publisher a moment for reliable resends, and prints "published N". Its own
process, because Fast DDS settings (the large-image profile) are per
process: whoever starts one decides whether it stands for a driver that
loads the profile. The node's side is counted from /diagnostics
(frames_received per camera).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
LINGER_S = 2.0


def start_driver(topic: str, width: int, height: int, rate_hz: float, count: int, reliability: str,
                 large_image_profile: bool, env: dict[str, str]) -> subprocess.Popen:
    """The driver process; `large_image_profile`: it loads the package's profile, as README advises
    for camera drivers (otherwise `env` decides, e.g. the default: no profile)."""
    env = dict(env)
    if large_image_profile:
        from vlm_perception.ros.dds_profile import PROFILE_VARIABLES, large_image_profile as profile_path

        for name in PROFILE_VARIABLES:
            env[name] = str(profile_path())
    return subprocess.Popen(
        [sys.executable, str(HERE / "camera_driver.py"), topic, "--size", f"{width}x{height}",
         "--rate", str(rate_hz), "--count", str(count), "--reliability", reliability],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def published(driver: subprocess.Popen, timeout: float) -> int:
    """How many frames the driver published; fails with its output when it did not finish."""
    try:
        output, _ = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        driver.kill()
        output, _ = driver.communicate()
        raise AssertionError(f"camera driver did not finish in {timeout} s:\n{output}")
    lines = [line for line in output.splitlines() if line.startswith("published ")]
    if driver.returncode != 0 or not lines:
        raise AssertionError(f"camera driver failed (exit {driver.returncode}):\n{output}")
    return int(lines[-1].split()[1])


class ReceivedFrames:
    """frames_received of each camera of one node, from its /diagnostics (1 Hz)."""

    def __init__(self, node: Any, node_prefix: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self._prefix = node_prefix
        self._lock = threading.Lock()
        self._received: dict[str, int] = {}
        self._messages: dict[str, str] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_array, 10)

    def _on_array(self, msg: Any) -> None:
        for status in msg.status:
            head = f"{self._prefix}: camera "
            if status.name.startswith(head):
                values = {kv.key: kv.value for kv in status.values}
                with self._lock:
                    self._received[status.name[len(head):]] = int(values["frames_received"])
                    self._messages[status.name[len(head):]] = status.message

    def count(self, camera: str) -> Optional[int]:
        with self._lock:
            return self._received.get(camera)

    def message(self, camera: str) -> str:
        with self._lock:
            return self._messages.get(camera, "")

    def settled(self, camera: str, timeout: float = 10.0) -> int:
        """The count once two reports a second apart agree (frames still in flight are counted)."""
        deadline = time.monotonic() + timeout
        previous = self.count(camera)
        while time.monotonic() < deadline:
            time.sleep(1.1)
            current = self.count(camera)
            if current is not None and current == previous:
                return current
            previous = current
        raise AssertionError(f"no settled frames_received for camera {camera} within {timeout} s: {previous}")


def _run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    width, height = (int(v) for v in args.size.split("x"))
    reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    rclpy.init()
    node = rclpy.create_node(f"camera_driver_{os.getpid()}")
    # Depth 10 as most drivers (and ros2 topic pub); sensor_data's depth 5 when best effort.
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10 if args.reliability == "reliable" else 5,
                     reliability=reliability)
    publisher = node.create_publisher(Image, args.topic, qos)
    try:
        deadline = time.monotonic() + args.wait
        while publisher.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                print(f"no subscriber on {args.topic} within {args.wait} s", flush=True)
                return 1
            time.sleep(0.05)
        time.sleep(0.5)  # the subscriber's side of the match completes too
        msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
        msg.data = np.random.default_rng(0).integers(0, 255, width * height * 3, np.uint8).tobytes()
        msg.header.frame_id = "camera_optical"
        start = time.monotonic()
        for i in range(args.count):
            time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            msg.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(msg)
        time.sleep(LINGER_S)
        print(f"published {args.count}", flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--count", type=int, default=90)
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a subscriber")
    return _run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
