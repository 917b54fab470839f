"""vlm_perception_demo: the whole workflow in one command (`make demo`).

Generates the sample bag (photographs put in, moved and taken out of a bin,
with its labels), starts the node with the best backend it can load (a local
model directory, the hub model if cached or downloadable, else the offline
backend), replays the bag through it in lockstep on bag time, so every frame
is evaluated whatever the model's speed, while recording the outputs; asks a
few sample questions over `~/query` on the way and prints the answers; then
writes the report scored against the labels and prints each query's F1 and
the inference latency.

    vlm_perception_demo [--out demo-output] [--backend owlv2|owlvit|offline] [--model ID] [--model-path DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import rclpy
import yaml
from ament_index_python.packages import get_package_prefix
from rclpy.executors import SingleThreadedExecutor

from vlm_perception_msgs.msg import ObjectPresenceArray
from vlm_perception_msgs.srv import QueryScene

from ..core.errors import VlmPerceptionError
from .report import load, scores_against
from .sample_bag import LABELS_NAME, PHOTO_SCENE, write_sample_bag

NAMESPACE = "demo"
# The sample bag's photo scene: what the standing queries look for and the questions ask about.
QUERIES = [obj.name for obj in PHOTO_SCENE]
QUESTIONS = ("is there a cat in the bin?", "is there a cup of coffee or a rocket?", "pick the cup of coffee")
FRAME_TIMEOUT_S = 300.0  # a CPU-only model may take seconds a frame; the replay waits for each
SAMPLE_TOPICS = {"image": "/camera/color/image_raw", "depth": "/camera/depth/image_raw",
                 "camera_info": "/camera/color/camera_info"}


class DemoError(VlmPerceptionError):
    """The demo cannot run here; the message says what to do."""


def executable(name: str) -> str:
    return str(Path(get_package_prefix("vlm_perception")) / "lib" / "vlm_perception" / name)


def model_is_available(model: str) -> tuple[bool, str]:
    """Whether `model` is in the local Hugging Face cache or can be downloaded, and why not."""
    from huggingface_hub import model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return True, "in the local Hugging Face cache"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False, "not cached, and HF_HUB_OFFLINE is set"
    try:
        model_info(model, timeout=10)
    except Exception as exc:  # any failure to reach the hub means: not downloadable from here
        return False, f"not cached, and the hub is unreachable ({type(exc).__name__})"
    return True, "downloadable from the Hugging Face hub"


def choose_backend(args: argparse.Namespace) -> dict[str, str]:
    """Node parameters for the best backend available, with a one-line notice of which and why.

    A local model directory first, then the hub model (cached or downloadable),
    then the offline backend, whose models ship in PyPI packages.
    """
    if args.model_path:
        print(f"demo: backend {args.backend} with the model in {args.model_path} (--model-path)")
        return {"backend": args.backend, "model_path": str(args.model_path)}
    if args.backend == "offline":
        return {"backend": "offline"}
    model = args.model or default_model(args.backend)
    available, why = model_is_available(model)
    if available:
        print(f"demo: backend {args.backend} with {model} ({why})")
        return {"backend": args.backend, "model": model}
    from ..backends.offline import missing_modules

    missing = missing_modules()
    if not missing:
        print(f"demo: {model} is {why}; using the offline backend instead (ImageNet classes only, "
              "models shipped in PyPI packages)")
        return {"backend": "offline"}
    raise DemoError(
        f"no model to run: {model} is {why}, and the offline backend's packages are missing "
        f"({', '.join(missing)}: pip install -r requirements-offline.txt); or rerun with --model-path DIR "
        "(make demo MODEL_PATH=DIR) pointing at a local OWLv2 model saved with save_pretrained")


def default_model(backend: str) -> str:
    """The hub id an OWL backend loads when `model` is empty."""
    from ..backends.owl import FAMILIES

    if backend not in FAMILIES:
        raise DemoError(f"the demo runs owlv2, owlvit or offline, not '{backend}'; use --backend")
    return FAMILIES[backend].default_model


def start_node(params: dict[str, object], params_file: Path) -> subprocess.Popen:
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    remaps = [arg for name, topic in SAMPLE_TOPICS.items() for arg in ("-r", f"{name}:={topic}")]
    return subprocess.Popen([executable("vlm_perception_node"), "--ros-args", "-r", f"__ns:=/{NAMESPACE}",
                             "--params-file", str(params_file), *remaps])


def ask(client, question: str, timeout: float) -> str:
    answered = threading.Event()
    future = client.call_async(QueryScene.Request(query=question, want_grasps=True))
    future.add_done_callback(lambda _: answered.set())
    if not answered.wait(timeout):
        return "(no answer in time)"
    response = future.result()
    if not response.success:
        return f"(failed: {response.message})"
    grasp = next((t for t in response.targets if t.has_pose), None)
    where = (f" Grasp at ({grasp.pose.position.x:.3f}, {grasp.pose.position.y:.3f}, "
             f"{grasp.pose.position.z:.3f}) m, opening {grasp.grasp_width * 100:.1f} cm.") if grasp else ""
    return f"{response.answer}{where}  [{response.inference_ms:.1f} ms]"


def run(args: argparse.Namespace) -> None:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # rate_hz at the camera's rate: lockstep then waits at most one timer period for each answer.
    params = {**choose_backend(args), "queries": QUERIES, "rate_hz": 10.0, "use_sim_time": True,
              "max_image_age": 2.0}
    bag, run_bag = out / "sample_bag", out / "run"
    for old in (bag, run_bag):
        shutil.rmtree(old, ignore_errors=True)
    write_sample_bag(bag, seconds=args.seconds, rate_hz=10.0, storage="mcap", scene="photos")
    frames = round(args.seconds * 10.0)
    print(f"demo: sample bag written to {bag} ({frames} frames, labels in {bag / LABELS_NAME})")

    with tempfile.TemporaryDirectory() as tmp:
        node = start_node(params, Path(tmp) / "params.yaml")
        rclpy.init()
        client_node = rclpy.create_node("vlm_perception_demo")
        executor = SingleThreadedExecutor()
        executor.add_node(client_node)
        threading.Thread(target=executor.spin, daemon=True).start()
        replay: Optional[subprocess.Popen] = None
        try:
            client = client_node.create_client(QueryScene, f"/{NAMESPACE}/vlm_perception/query")
            while not client.wait_for_service(timeout_sec=1.0):
                if node.poll() is not None:
                    raise DemoError("the node did not start (see its error above)")
            answered = _FrameCounter()
            client_node.create_subscription(ObjectPresenceArray, f"/{NAMESPACE}/vlm_perception/presence",
                                            answered.on_output, 100)
            replay = subprocess.Popen([executable("vlm_perception_replay"), str(bag), "--lockstep",
                                       "--frame-timeout", str(FRAME_TIMEOUT_S), "--start-delay", "120",
                                       "--record", str(run_bag), "--record-namespace", f"/{NAMESPACE}"])
            # One question at each quarter of the bag, on the frame the node has just answered.
            for i, question in enumerate(QUESTIONS):
                if not answered.wait_for(frames * (i + 1) // (len(QUESTIONS) + 1), replay, FRAME_TIMEOUT_S):
                    raise DemoError("the node stopped answering while the bag played; see the messages above")
                print(f"demo: Q{i + 1} {question!r} -> {ask(client, question, timeout=FRAME_TIMEOUT_S)}")
            if replay.wait() != 0:
                raise DemoError(f"the replay failed (exit {replay.returncode}); see its message above")
        finally:
            if replay is not None and replay.poll() is None:
                replay.send_signal(signal.SIGINT)
                replay.wait()
            node.send_signal(signal.SIGINT)
            node.wait()
            executor.shutdown()
            client_node.destroy_node()
            rclpy.try_shutdown()

    labels = bag / LABELS_NAME
    report = subprocess.run([executable("vlm_perception_report"), str(run_bag), "--out", str(out / "report"),
                             "--labels", str(labels), "--junit", str(out / "report" / "report.xml")])
    if report.returncode != 0:
        raise DemoError("the report could not be written; see its message above")
    _, scores = scores_against(load(run_bag), labels)
    for query_score in scores:
        if not query_score.evaluated:
            print(f"demo: {query_score.query!r}: not evaluated on any of the {query_score.frames} frames")
            continue
        print(f"demo: {query_score.query!r}: F1 {query_score.f1:.2f} (precision {query_score.precision:.2f}, "
              f"recall {query_score.recall:.2f}), {query_score.evaluated} of {query_score.frames} frames "
              f"evaluated, inference p50 {query_score.latency_p50_ms:.1f} ms, p95 {query_score.latency_p95_ms:.1f} ms")
    print(f"demo: done. Recorded run: {run_bag}; report: {out / 'report'}")


class _FrameCounter:
    """Counts the frames the node has answered (distinct source stamps on ~/presence)."""

    def __init__(self) -> None:
        self._stamps: set[tuple[int, int]] = set()
        self._changed = threading.Condition()

    def on_output(self, msg: ObjectPresenceArray) -> None:
        with self._changed:
            self._stamps.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
            self._changed.notify_all()

    def wait_for(self, count: int, replay: subprocess.Popen, timeout: float) -> bool:
        """True once `count` frames are answered, or the replay ended; False after `timeout` s of silence."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._stamps) < max(count, 1) and replay.poll() is None:
                before = len(self._stamps)
                self._changed.wait(1.0)  # also notices a replay that has ended
                if len(self._stamps) > before:
                    deadline = time.monotonic() + timeout
                elif time.monotonic() > deadline:
                    return False
            return True


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run the vlm_perception demo end to end.")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where bags and the report go")
    parser.add_argument("--backend", default="owlv2", help="owlv2, owlvit or offline")
    parser.add_argument("--model", default="", help="Hugging Face model id (default: the backend's)")
    parser.add_argument("--model-path", type=Path, default=None, help="local model directory")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the sample bag (10 frames a second)")
    args = parser.parse_args(argv)
    try:
        run(args)
    except VlmPerceptionError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
