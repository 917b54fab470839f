"""GPU section: per-frame latency and frames/s of OWLv2 and CLIP on CUDA, for 1 camera and for 4 cameras.

Runs unchanged on a CUDA machine; elsewhere it says it was not run. Full-size
random-weight OWLv2-base (960 px, as the ensemble checkpoint) and CLIP
ViT-B/32, loaded through the backends with device cuda and precision auto
(bf16 where the GPU has bf16 units, else fp16; see precision.py), attention
through PyTorch SDPA (transformers' default for both; printed). 5 phrases,
cached, as for standing queries:

- 1 camera: detect() on a new 640x480 frame each time; median latency and
  frames/s = 1 / latency;
- 4 cameras: four cameras' frames in turn through the one backend, as the node
  serialises backend calls; frames/s in all and per camera.

--device cpu --tiny runs the same code on tiny models (a check that the script
works where there is no GPU).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may come from a model hub

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "vlm_perception"), str(ROOT / "vlm_perception" / "test")]

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import CLIPConfig, Owlv2Config  # noqa: E402

from bench_support import camera_frame, new_frame, timed  # noqa: E402
from tiny_clip import save_clip, tiny_config as tiny_clip_config  # noqa: E402
from tiny_models import save_owl, tiny_config as tiny_owl_config  # noqa: E402
from vlm_perception.backends.clip import ClipBackend  # noqa: E402
from vlm_perception.backends.owl import OwlBackend  # noqa: E402

PHRASES = ["person", "red cup", "laptop computer", "potted plant", "cardboard box"]
CAMERAS = 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu with --tiny to check the script")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per figure after warm-up")
    parser.add_argument("--tiny", action="store_true", help="tiny models instead of the full-size ones")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"GPU section: not run (no CUDA device: torch {torch.__version__}, "
              f"torch.cuda.is_available() is False)")
        return 0
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (script check)"
    print(f"device: {device} ({name}); torch {torch.__version__}")
    frames = [camera_frame(seed) for seed in range(CAMERAS)]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        owl_config = tiny_owl_config("owlv2") if args.tiny else Owlv2Config(vision_config={"image_size": 960})
        clip_config = tiny_clip_config("clip") if args.tiny else CLIPConfig()
        models: dict[str, Callable[[], Any]] = {
            "OWLv2-base 960 px": lambda: OwlBackend("owlv2", model_path=str(save_owl(Path(tmp) / "owl", "owlv2",
                                                                                      owl_config)),
                                                   device=args.device, precision=args.precision),
            "CLIP ViT-B/32": lambda: ClipBackend(model_path=str(save_clip(Path(tmp) / "clip", "clip", clip_config)),
                                                 device=args.device, precision=args.precision),
        }
        for title, load in models.items():
            backend = load()
            attention = backend.model.config.vision_config._attn_implementation
            print(f"== {title}{' (tiny)' if args.tiny else ''}: precision {backend.precision}, attention {attention}")
            for i in range(3):  # warm-up: phrase cache, CUDA kernels and allocator
                backend.detect(new_frame(frames[i % CAMERAS]), PHRASES)
            one = [timed(lambda: backend.detect(new_frame(frames[0]), PHRASES), device) for _ in range(args.frames)]
            latency = statistics.median(one)
            print(f"  1 camera:  {latency * 1000:7.1f} ms per frame, {1 / latency:6.1f} frames/s")
            start = time.perf_counter()
            for i in range(args.frames):
                for camera in range(CAMERAS):
                    backend.detect(new_frame(frames[camera]), PHRASES)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            total = args.frames * CAMERAS / (time.perf_counter() - start)
            print(f"  {CAMERAS} cameras: {total:6.1f} frames/s in all, {total / CAMERAS:6.1f} per camera")
            del backend
    return 0


if __name__ == "__main__":
    sys.exit(main())
