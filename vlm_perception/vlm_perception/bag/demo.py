"""vlm_perception_demo: the whole workflow in one command (`make demo`).

Generates the sample bag, starts the node with the best backend it can load
(a local model directory, the hub model if cached or downloadable, else the
offline backend),
replays the bag through it on bag time while recording the outputs, asks a few
sample questions over `~/query`, prints the answers, and writes the report.

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
from .sample_bag import write_sample_bag

NAMESPACE = "demo"
QUESTIONS = ("is there an apple in the bin?", "is there a banana or a cup?", "pick the apple")
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
    return f"{response.answer}{where}  [{response.inference_ms:.0f} ms]"


def run(args: argparse.Namespace) -> None:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {**choose_backend(args), "queries": ["apple", "banana", "cup"], "rate_hz": 2.0,
              "use_sim_time": True, "max_image_age": 2.0}
    bag, run_bag = out / "sample_bag", out / "run"
    for old in (bag, run_bag):
        shutil.rmtree(old, ignore_errors=True)
    write_sample_bag(bag, seconds=args.seconds, rate_hz=10.0, storage="mcap")
    print(f"demo: sample bag written to {bag}")

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
            first_output = threading.Event()
            client_node.create_subscription(ObjectPresenceArray, f"/{NAMESPACE}/vlm_perception/presence",
                                            lambda _: first_output.set(), 10)
            replay = subprocess.Popen([executable("vlm_perception_replay"), str(bag), "--record", str(run_bag),
                                       "--record-namespace", f"/{NAMESPACE}"])
            # Questions make sense once the node has frames: its first standing-query output says so.
            if not first_output.wait(60.0):
                raise DemoError("the node published nothing while the bag played; see the messages above")
            for i, question in enumerate(QUESTIONS):
                time.sleep(args.seconds / (len(QUESTIONS) + 1))
                print(f"demo: Q{i + 1} {question!r} -> {ask(client, question, timeout=120.0)}")
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

    report = subprocess.run([executable("vlm_perception_report"), str(run_bag), "--out", str(out / "report")])
    if report.returncode != 0:
        raise DemoError("the report could not be written; see its message above")
    print(f"demo: done. Recorded run: {run_bag}; report: {out / 'report'}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run the vlm_perception demo end to end.")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where bags and the report go")
    parser.add_argument("--backend", default="owlv2", help="owlv2, owlvit or offline")
    parser.add_argument("--model", default="", help="Hugging Face model id (default: the backend's)")
    parser.add_argument("--model-path", type=Path, default=None, help="local model directory")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the sample bag")
    args = parser.parse_args(argv)
    try:
        run(args)
    except VlmPerceptionError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
