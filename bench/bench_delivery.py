"""Frame delivery over DDS: frames the node received / frames a camera driver published.

Raw rgb8 frames at 640x480, 1280x720 and 1920x1080, 30 Hz, from a driver in
its own process publishing reliable or best effort, into the real node with
image_qos auto and with sensor_data, in the same run (both nodes up at once,
runs interleaved). Default environment on both sides: no Fast DDS profile;
one extra row per size has a best-effort driver that loads the package's
large-image profile, as README advises. The driver starts once the node's
subscription matched, so the count is delivery, not discovery; the node's
count is frames_received from /diagnostics.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm_perception" / "test"))
from camera_driver import ReceivedFrames, published, start_driver  # noqa: E402
from ros_harness import NodeProcess, TestClient, node_env  # noqa: E402

import rclpy  # noqa: E402

SIZES = [(640, 480), (1280, 720), (1920, 1080)]
DRIVERS = [("reliable", "reliable", False), ("best effort", "best_effort", False),
           ("best effort + profile", "best_effort", True)]
MODES = ["auto", "sensor_data"]


def camera_name(width: int, reliability: str, profile: bool) -> str:
    return f"{'r' if reliability == 'reliable' else 'b'}{'p' if profile else ''}{width}"


def start_node(mode: str, cameras: list[str]) -> tuple[NodeProcess, TestClient, ReceivedFrames]:
    node = NodeProcess(f"delivery{uuid.uuid4().hex[:6]}",
                       {"backend": "plugin_backends:ColorBackend", "rate_hz": 0.0, "max_image_age": 0.0,
                        "image_qos": mode, "cameras": cameras})
    client = TestClient(node.prefix, subscribe_outputs=False)
    if not client.wait_for_service(120.0):
        raise SystemExit(f"node did not come up:\n{node.output}")
    return node, client, ReceivedFrames(client.node, node.prefix)


def deliver(node: NodeProcess, received: ReceivedFrames, camera: str, size: tuple[int, int], rate_hz: float,
            frames: int, reliability: str, profile: bool) -> tuple[int, int]:
    before = received.settled(camera)
    driver = start_driver(f"{node.namespace}/{camera}/image", *size, rate_hz, frames, reliability,
                          large_image_profile=profile, env=node_env())
    sent = published(driver, 120.0)
    return received.settled(camera) - before, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=90, help="frames per run (default 90: 3 s at 30 Hz)")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    args = parser.parse_args()
    cameras = [camera_name(w, reliability, profile) for w, _ in SIZES for _, reliability, profile in DRIVERS]
    rclpy.init()
    nodes = {mode: start_node(mode, cameras) for mode in MODES}
    results: dict[tuple[str, tuple[int, int], str], tuple[int, int]] = {}
    try:
        for size in SIZES:
            for label, reliability, profile in DRIVERS:
                for mode in MODES:  # interleaved, so both modes see the same machine load
                    node, _, received = nodes[mode]
                    results[(label, size, mode)] = deliver(node, received, camera_name(size[0], reliability, profile),
                                                           size, args.rate, args.frames, reliability, profile)
    finally:
        for node, client, _ in nodes.values():
            client.close()
            node.stop()
        rclpy.try_shutdown()

    print(f"raw rgb8 frames at {args.rate:g} Hz, {args.frames} per run: received by the node / published; "
          "default environment (no Fast DDS profile unless the row says so)")
    print(f"{'driver publishes':<24}{'size':<12}{'image_qos auto':>16}{'sensor_data':>16}{'auto/sensor_data':>18}")
    for size in SIZES:
        for label, _, _ in DRIVERS:
            (auto_got, auto_sent), (sd_got, sd_sent) = (results[(label, size, mode)] for mode in MODES)
            ratio = f"{auto_got / sd_got:.1f}x" if sd_got else ("n/a" if not auto_got else "inf")
            print(f"{label:<24}{f'{size[0]}x{size[1]}':<12}{f'{auto_got}/{auto_sent}':>16}"
                  f"{f'{sd_got}/{sd_sent}':>16}{ratio:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
