"""End to end through the node: a ~/query for 5 phrases on a 640x480 frame, OWLv2, fp32 against the best path.

The full-size OWLv2-base architecture (random weights, 768 px, as
bench_precision.py builds it) is served by the real node executable over DDS,
once with precision fp32 / runtime torch and once with the best path
(default: precision auto, runtime openvino), both nodes up at once and calls
alternating between them. Every call carries a new 640x480 frame in the
request, so each one runs the image tower; phrases are cached after the
warm-up, as for standing queries. Reported: the round trip
the caller sees, and the node's own inference_ms, median over the calls.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vlm_perception" / "test"))
from bench_node import frame_msg, start  # noqa: E402
from bench_support import camera_frame  # noqa: E402
from tiny_models import save_owl  # noqa: E402

import rclpy  # noqa: E402
from transformers import Owlv2Config  # noqa: E402

QUERY = "person, red cup, laptop computer, potted plant, cardboard box"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3, help="timed calls per path after one warm-up")
    parser.add_argument("--owl-size", type=int, default=768)
    parser.add_argument("--best", default="precision=auto,runtime=openvino",
                        help="the best path's parameters, e.g. precision=bf16,runtime=torch")
    args = parser.parse_args()
    try:
        args.best = dict(item.split("=", 1) for item in args.best.split(","))
    except ValueError:
        parser.error("--best takes name=value pairs separated by commas")
    return args


def round_trips(model_dir: Path, paths: dict[str, dict[str, str]], calls: int) -> dict[str, tuple]:
    """Per path: median round trip and inference_ms (seconds) and how the node ran the model.

    One node per path, all up at once; calls alternate between them in rotating order, so load
    from other work on the CPU hits every path alike.
    """
    nodes = {}
    try:
        for label, params in paths.items():
            nodes[label] = start({"backend": "owlv2", "model_path": str(model_dir), "device": "cpu", "rate_hz": 0.0,
                                  "max_image_age": 0.0, **params}, timeout=900.0)  # a first export takes minutes
        trips: dict[str, list[float]] = {label: [] for label in paths}
        inference: dict[str, list[float]] = {label: [] for label in paths}
        order = list(paths)
        for i in range(calls + 1):
            for label in order:
                client = nodes[label][1]
                image = frame_msg(client, camera_frame(10 + i))  # the same new frame for every path
                start_s = time.perf_counter()
                response = client.query(QUERY, timeout=600.0, image=image)
                elapsed = time.perf_counter() - start_s
                if not response.success:
                    raise SystemExit(f"query failed ({label}): {response.message}")
                if i:  # the first call is the warm-up (text tower, first-call allocations)
                    trips[label].append(elapsed)
                    inference[label].append(response.inference_ms / 1000.0)
            order = order[1:] + order[:1]
        results = {}
        for label, (node, _) in nodes.items():
            configured = next((line for line in node.output.splitlines() if "configured: backend" in line), "")
            how = configured.split("(", 1)[1].split(")", 1)[0] if "(" in configured else str(paths[label])
            results[label] = (statistics.median(trips[label]), statistics.median(inference[label]), how)
        return results
    finally:
        for node, client in nodes.values():
            client.close()
            node.stop()


def main() -> int:
    args = parse_args()
    rclpy.init()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-precision-node-") as tmp:
            model_dir = save_owl(Path(tmp) / "owlv2", "owlv2", Owlv2Config(vision_config={"image_size": args.owl_size}))
            results = round_trips(model_dir, {"fp32": {"precision": "fp32", "runtime": "torch"}, "best": args.best},
                                  args.calls)
    finally:
        rclpy.shutdown()
    (base_trip, base_inference, base_how), (trip, inference, how) = results["fp32"], results["best"]
    print(f"~/query for 5 phrases, OWLv2-base {args.owl_size} px, new 640x480 frame in each request, "
          f"median of {args.calls} calls after a warm-up:")
    print(f"  fp32 ({base_how}): round trip {base_trip * 1000:.0f} ms, inference_ms {base_inference * 1000:.0f}")
    print(f"  best ({how}): round trip {trip * 1000:.0f} ms, inference_ms {inference * 1000:.0f}; "
          f"{base_trip / trip:.2f}x faster round trip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
