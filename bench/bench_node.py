"""Node benchmarks over real DDS: service overhead and image ingest cost.

- Node overhead: service round trip minus the backend's own time
  (`inference_ms`), with the tiny OWLv2 model; target p50 under 5 ms.
- Image ingest: node CPU time per 1280x720 rgb8 frame streamed at 30 Hz with
  no queries running, idle CPU subtracted; target under 2 ms per frame.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm_perception" / "test"))
from ros_harness import NodeProcess, TestClient, node_env  # noqa: E402
from tiny_models import save_tiny_owl  # noqa: E402

import rclpy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from vlm_perception.core.images import encode_image_fields  # noqa: E402


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(params: dict, timeout: float = 120.0) -> tuple[NodeProcess, TestClient]:
    node = NodeProcess(f"bench{uuid.uuid4().hex[:6]}", params)
    # A pure service caller: the node's cost, not the client's topic processing, is measured.
    client = TestClient(node.prefix, subscribe_outputs=False)
    if not client.wait_for_service(timeout):
        raise SystemExit(f"node did not come up:\n{node.output}")
    client.handshake()
    return node, client


def frame_msg(client: TestClient, rgb: np.ndarray) -> Image:
    msg = Image(**encode_image_fields(rgb, "rgb8"))
    msg.header.frame_id = "camera"
    msg.header.stamp = client.node.get_clock().now().to_msg()
    return msg


def bench_overhead(model_dir: Path, calls: int) -> float:
    node, client = start({"backend": "owlv2", "model_path": str(model_dir), "rate_hz": 0.0,
                          "max_image_age": 0.0, "device": "cpu"})
    try:
        rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
        for _ in range(50):
            client.image_pub.publish(frame_msg(client, rgb))
            time.sleep(0.05)
            if client.query("apple").success:
                break
        overheads = []
        for i in range(calls + 10):
            start_s = time.perf_counter()
            response = client.query("is there an apple or a banana?")
            round_trip_ms = (time.perf_counter() - start_s) * 1000.0
            assert response.success, response.message
            if i >= 10:  # warm-up
                overheads.append(round_trip_ms - response.inference_ms)
        p50 = statistics.median(overheads)
        p90 = statistics.quantiles(overheads, n=10)[-1]
        print(f"node overhead (round trip - inference_ms), tiny OWLv2, {calls} calls: "
              f"p50 {p50:.2f} ms, p90 {p90:.2f} ms   [target p50 < 5 ms]")
        return p50
    finally:
        client.close()
        node.stop()


BARE_SUBSCRIBER = """
import sys, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("bare_subscriber", namespace=sys.argv[1])
node.create_subscription(Image, "image", lambda msg: None, qos_profile_sensor_data)
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    pass
"""


def stream_cpu_ms_per_frame(client: TestClient, pid: int, seconds: float) -> tuple[float, int]:
    """CPU ms per frame that process `pid` spends on a 30 Hz 1280x720 rgb8 stream, idle subtracted."""
    rgb = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8)
    msg = frame_msg(client, rgb)
    time.sleep(1.0)
    idle_start = process_cpu_s(pid)
    time.sleep(seconds)
    idle_cpu_per_s = (process_cpu_s(pid) - idle_start) / seconds
    frames, busy_start = 0, process_cpu_s(pid)
    start_s = next_time = time.perf_counter()
    while next_time < start_s + seconds:
        msg.header.stamp = client.node.get_clock().now().to_msg()
        client.image_pub.publish(msg)
        frames += 1
        next_time += 1.0 / 30.0
        time.sleep(max(0.0, next_time - time.perf_counter()))
    time.sleep(0.5)  # let the last frames land
    busy_cpu = process_cpu_s(pid) - busy_start - idle_cpu_per_s * (time.perf_counter() - start_s)
    return max(0.0, busy_cpu) / frames * 1000.0, frames


def bench_ingest(seconds: float) -> float:
    node, client = start({"backend": "plugin_backends:ColorBackend", "rate_hz": 0.0})
    try:
        client.wait_for_subscriber()
        node_ms, frames = stream_cpu_ms_per_frame(client, node.process.pid, seconds)
        assert client.query("apple").success, "the node lost its frames"
    finally:
        client.close()
        node.stop()
    # Baseline in the same run: a bare rclpy subscriber that does nothing with the frames.
    namespace = f"bare{uuid.uuid4().hex[:6]}"
    bare = subprocess.Popen([sys.executable, "-c", BARE_SUBSCRIBER, namespace], env=node_env())
    client = TestClient(f"/{namespace}/unused", subscribe_outputs=False)
    try:
        client.wait_for_subscriber(30.0)
        bare_ms, _ = stream_cpu_ms_per_frame(client, bare.pid, seconds)
    finally:
        client.close()
        bare.send_signal(signal.SIGINT)
        bare.wait(10)
    print(f"image ingest, 1280x720 rgb8 at 30 Hz, no queries: {node_ms:.2f} ms CPU per frame ({frames} frames); "
          f"bare rclpy subscriber in the same run: {bare_ms:.2f} ms ({node_ms / bare_ms:.2f}x)   [target < 2 ms]")
    return node_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rclpy.init()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench_overhead(save_tiny_owl(Path(tmp) / "owlv2", "owlv2"), args.calls)
        bench_ingest(args.seconds)
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    main()
