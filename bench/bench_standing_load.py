"""Standing-query rate with a CPU hog beside the node, over real DDS.

A client publishes color, depth and camera_info (640x480, one stamp, depth
20-80 ms after color) at 10 Hz, as an RGB-D camera driver does; the
node runs standing queries at 2 Hz. With the default ColorBackend test plugin
inference takes a few milliseconds, so a missing tick is the node's
scheduling, not the model. The same node is measured twice in one run: on the
machine as it is, then with busy-loop processes keeping `--hog-cores` cores
busy beside it. Reported per phase: standing-query outputs per second
(~/grasp_targets; target 2.0), the gaps between them, how many carried a 3D
pose (color/depth pairing; only those are published on ~/grasp_pose), the
node's CPU use and the CPU left idle on the machine (what "spare CPU" could
explain).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm_perception" / "test"))
from cpu_hog import CpuHog  # noqa: E402
from ros_harness import NodeProcess, TestClient  # noqa: E402
from test_node_grasps import RgbdStream  # noqa: E402
from tiny_models import save_tiny_owl  # noqa: E402

import rclpy  # noqa: E402
from vlm_perception_msgs.msg import GraspTargetArray  # noqa: E402

RATE_HZ = 2.0
DEPTH_DELAY_S = (0.02, 0.08)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(idle + iowait, all) CPU seconds of the whole machine so far, summed over cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[3] + fields[4]) / tick, sum(fields) / tick


def measure(outputs: list[tuple[float, GraspTargetArray]], stream: RgbdStream, pid: int, seconds: float) -> dict:
    first, first_frame = len(outputs), len(stream.stamps)
    cpu0, (idle0, all0) = process_cpu_s(pid), machine_cpu_s()
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    cpu1, (idle1, all1) = process_cpu_s(pid), machine_cpu_s()
    window = outputs[first:]
    camera_hz = (len(stream.stamps) - first_frame) / elapsed
    gaps = [b[0] - a[0] for a, b in zip(window, window[1:])]
    targets = [msg.targets[0] for _, msg in window if msg.targets]
    return {"rate": len(window) / elapsed, "outputs": len(window), "camera_hz": camera_hz,
            "with_pose": sum(t.has_pose for t in targets),
            "statuses": sorted({t.pose_status.split(" (")[0] for t in targets if not t.has_pose}),
            "gap_p50": statistics.median(gaps) if gaps else float("nan"), "gap_max": max(gaps, default=float("nan")),
            "node_cpu": (cpu1 - cpu0) / elapsed,
            "idle_cores": (idle1 - idle0) / max(1e-9, all1 - all0) * os.cpu_count()}


def report(label: str, m: dict) -> None:
    print(f"  {label:<20} {m['rate']:.2f} outputs/s ({m['outputs']}; with a pose: {m['with_pose']}), "
          f"gap p50 {m['gap_p50']:.3f} s max {m['gap_max']:.3f} s, camera {m['camera_hz']:.1f} Hz, "
          f"node CPU {m['node_cpu']:.2f} cores, "
          f"idle {m['idle_cores']:.2f} of {os.cpu_count()} cores"
          + (f"; pose-less: {'; '.join(m['statuses'])}" if m["statuses"] else ""), flush=True)


def run(backend: dict, seconds: float, hog_cores: int) -> None:
    node = NodeProcess(f"bench{uuid.uuid4().hex[:6]}", {
        **backend, "queries": ["apple"], "rate_hz": RATE_HZ, "max_image_age": 5.0})
    client = TestClient(node.prefix, subscribe_outputs=False)
    outputs: list[tuple[float, GraspTargetArray]] = []
    client.node.create_subscription(GraspTargetArray, f"{node.prefix}/grasp_targets",
                                    lambda msg: outputs.append((time.monotonic(), msg)), 10)
    try:
        if not client.wait_for_service(120.0):
            raise SystemExit(f"node did not come up:\n{node.output}")
        client.wait_for_subscriber()
        with RgbdStream(client, depth_delay_s=DEPTH_DELAY_S) as stream:
            time.sleep(2.0)  # discovery settled, frames flowing
            print(f"standing queries at {RATE_HZ:g} Hz ({backend['backend']}), color+depth+camera_info 640x480 "
                  f"at 10 Hz, depth {DEPTH_DELAY_S[0] * 1000:.0f}-{DEPTH_DELAY_S[1] * 1000:.0f} ms after color, "
                  f"{seconds:g} s per phase:")
            unloaded = measure(outputs, stream, node.process.pid, seconds)
            report("as the machine is", unloaded)
            with CpuHog(hog_cores, limit_s=seconds + 30.0):
                time.sleep(1.0)
                loaded = measure(outputs, stream, node.process.pid, seconds)
            report(f"{hog_cores} core(s) hogged", loaded)
        print(f"  rate with the hog / without: {loaded['rate'] / max(1e-9, unloaded['rate']):.2f}   "
              f"[target: {RATE_HZ:g} outputs/s, all with a pose, in both phases]")
    finally:
        client.close()
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--hog-cores", type=int, default=1, help="cores the busy loops keep busy")
    parser.add_argument("--backend", choices=("color", "owlv2"), default="color",
                        help="ColorBackend (a few ms, numpy) or the tiny OWLv2 model (torch on the CPU)")
    args = parser.parse_args()
    rclpy.init()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            backend = {"backend": "plugin_backends:ColorBackend"} if args.backend == "color" else {
                "backend": "owlv2", "model_path": str(save_tiny_owl(Path(tmp) / "owlv2")), "device": "cpu"}
            run(backend, args.seconds, args.hog_cores)
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    main()
