"""Lockstep replay over real DDS: overhead per frame, and frames evaluated against bag-paced replay.

- Lockstep overhead per frame: replay wall time (first frame published to
  last answer received, both on the recording's clock) minus the sum of the
  node's inference times, per frame; fast colour-matching backend, the node at
  rate_hz 10 and 50 (each frame waits up to one timer period for its answer).
- Baseline in the same run: the same bag replayed on its own clock (--rate 1)
  through a 300 ms/frame backend: frames evaluated, and wall time per frame.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm_perception" / "test"))
from ros_harness import NodeProcess, TestClient, node_env  # noqa: E402

import rclpy  # noqa: E402
from ament_index_python.packages import get_package_prefix  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402

from vlm_perception.bag import sample_bag  # noqa: E402

QUERIES = ["apple", "banana", "cup"]


def replay_executable() -> str:
    return str(Path(get_package_prefix("vlm_perception")) / "lib" / "vlm_perception" / "vlm_perception_replay")


def run(bag: Path, out: Path, backend: str, rate_hz: float, lockstep: bool) -> dict[str, float]:
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    node = NodeProcess(namespace, {"backend": backend, "queries": QUERIES, "rate_hz": rate_hz,
                                   "use_sim_time": True, "max_image_age": 2.0, "image_qos": "reliable"})
    client = TestClient(node.prefix, subscribe_outputs=False, image_qos="reliable")  # only waits for the service
    try:
        if not client.wait_for_service(120.0):
            raise SystemExit(f"node did not come up:\n{node.output}")
        started = time.perf_counter()
        subprocess.run([replay_executable(), str(bag), *(["--lockstep"] if lockstep else []), "--start-delay", "30",
                        "--record", str(out), "--record-namespace", f"/{namespace}",
                        "--remap", f"{sample_bag.COLOR_TOPIC}:=/{namespace}/image",
                        f"{sample_bag.DEPTH_TOPIC}:=/{namespace}/depth",
                        f"{sample_bag.INFO_TOPIC}:=/{namespace}/camera_info"],
                       env=node_env(), check=True, timeout=600)
        process_s = time.perf_counter() - started
    finally:
        client.close()
        node.stop()
    sent, answers = [], []
    with AnyReader([out]) as reader:
        for conn, timestamp, data in reader.messages():
            if conn.topic == f"/{namespace}/image":
                sent.append(timestamp)
            elif conn.topic.endswith("/presence"):
                answers.append((timestamp, reader.deserialize(data, conn.msgtype).inference_ms))
    wall_s = (answers[-1][0] - sent[0]) / 1e9
    inference_s = sum(ms for _, ms in answers) / 1000.0
    return {"frames": len(sent), "evaluated": len(answers), "wall_s": wall_s, "process_s": process_s,
            "overhead_ms": (wall_s - inference_s) / len(sent) * 1000.0, "inference_ms": inference_s / len(answers) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="bag length at 10 Hz")
    args = parser.parse_args()
    rclpy.init()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bag = sample_bag.write_sample_bag(Path(tmp) / "bag", args.seconds, 10.0, scene="shapes")
            for rate_hz in (10.0, 50.0):
                r = run(bag, Path(tmp) / f"fast{rate_hz:g}", "plugin_backends:ColorBackend", rate_hz, True)
                print(f"lockstep, fast backend, rate_hz {rate_hz:g}: {r['evaluated']}/{r['frames']} frames evaluated, "
                      f"{r['wall_s'] / r['frames'] * 1000:.1f} ms wall per frame, overhead {r['overhead_ms']:.1f} ms "
                      f"per frame (inference {r['inference_ms']:.1f} ms); replay process {r['process_s']:.1f} s",
                      flush=True)
            paced = run(bag, Path(tmp) / "paced", "plugin_backends:SlowColorBackend", 10.0, False)
            print(f"baseline, bag-paced (--rate 1), 300 ms backend: {paced['evaluated']}/{paced['frames']} frames "
                  f"evaluated, {paced['wall_s'] / paced['frames'] * 1000:.1f} ms wall per frame", flush=True)
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    main()
