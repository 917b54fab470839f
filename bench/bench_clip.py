"""Per-frame cost of the CLIP presence backend against its floor and the transformers pipeline.

The full-size CLIP ViT-B/32 architecture (`CLIPConfig()` defaults, the compute
of openai/clip-vit-base-patch32) is built with random weights, saved with an
offline tokenizer that holds the prompt words whole (as the real vocabulary
does, so prompts have realistic lengths) and loaded through the backend.
Ten standing phrases on distinct 640x480 frames, torch threads at default:

- backend: `ClipBackend.detect` on a new frame, phrase embeddings cached (the
  standing-query case: preprocessing, image tower, scores);
- floor: the image tower alone, `model.get_image_features` on the same
  preprocessed pixels;
- pipeline: transformers `pipeline("zero-shot-image-classification")` built
  from the same model and tokenizer with the PIL image processor, the same ten
  phrases (frames handed over as PIL images, conversion not timed).

Targets: backend within 15% of the floor; at least 2x faster than the pipeline.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may come from a model hub

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "vlm_perception"), str(ROOT / "vlm_perception" / "test")]

import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPConfig, pipeline  # noqa: E402
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402

from bench_support import camera_frame, new_frame, timed  # noqa: E402
from tiny_clip import save_clip  # noqa: E402
from vlm_perception.backends.clip import DEFAULT_NEGATIVES, DEFAULT_TEMPLATES, ClipBackend  # noqa: E402
from vlm_perception.core.errors import BackendLoadError  # noqa: E402

PHRASES = ["person", "red cup", "laptop computer", "potted plant", "cardboard box", "banana", "screwdriver",
           "water bottle", "coffee mug", "pair of scissors"]
PIPELINE_TEMPLATE = "This is a photo of {}."  # the pipeline's default hypothesis template
FRAMES = 5
MAX_OVER_FLOOR = 1.15
MIN_OVER_PIPELINE = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--rounds", type=int, default=3,
                        help=f"timed passes over the {FRAMES} frames after one warm-up, medians reported "
                             "(~40 s each on 2 CPU cores)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    started = time.perf_counter()
    config = CLIPConfig()  # ViT-B/32 at 224 px, the 12-layer 512-wide text tower
    prompt_text = " ".join([*PHRASES, *DEFAULT_TEMPLATES, PIPELINE_TEMPLATE, *DEFAULT_NEGATIVES]).lower()
    with tempfile.TemporaryDirectory(prefix="clip-vit-b32-random-") as model_dir:
        save_clip(model_dir, "clip", config, words=re.findall(r"[a-z]+", prompt_text))
        load_start = time.perf_counter()
        try:
            backend = ClipBackend(model_path=model_dir, device=args.device)
        except BackendLoadError as exc:
            print(f"cannot start the backend: {exc}", file=sys.stderr)
            return 1
        load_s = time.perf_counter() - load_start
        image_processor = CLIPImageProcessorPil.from_pretrained(model_dir)
    device = backend.device
    classifier = pipeline("zero-shot-image-classification", model=backend.model, tokenizer=backend.tokenizer,
                          image_processor=image_processor, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"device: {device} ({name}); torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"transformers {transformers.__version__}")
    vision = config.vision_config
    tokens = [len(backend.tokenizer(PIPELINE_TEMPLATE.format(p))["input_ids"]) for p in PHRASES]
    print(f"model: CLIP ViT-B/{vision.patch_size}, random weights, {vision.image_size} px, "
          f"{sum(p.numel() for p in backend.model.parameters()) / 1e6:.0f}M parameters; loaded in {load_s:.1f} s; "
          f"pipeline prompts {min(tokens)}-{max(tokens)} tokens")

    frames = [camera_frame(seed) for seed in range(FRAMES)]
    pil_frames = [Image.fromarray(f) for f in frames]
    with torch.inference_mode():
        pixel_values = [backend._preprocess(f) for f in frames]

    def floor(i: int) -> None:
        with torch.inference_mode():
            backend.model.get_image_features(pixel_values=pixel_values[i])

    def through_pipeline(i: int) -> None:
        classifier(pil_frames[i], candidate_labels=PHRASES, hypothesis_template=PIPELINE_TEMPLATE)

    backend.detect(new_frame(frames[0]), PHRASES)  # warm-up, and fills the phrase cache
    floor(0)
    through_pipeline(0)
    runs: dict[str, Callable[[int], object]] = {
        "backend": lambda i: backend.detect(new_frame(frames[i]), PHRASES),  # the frame copy is timed too
        "floor": floor,
        "pipeline": through_pipeline,
    }
    times: dict[str, list[float]] = {key: [] for key in runs}
    order = list(runs)
    for _ in range(args.rounds):
        for i in range(FRAMES):
            for key in order:
                times[key].append(timed(lambda: runs[key](i), device))
            order = order[1:] + order[:1]  # no method always runs right after another

    # Other work shares the CPU: the median is the typical cost, the minimum the least disturbed one.
    median = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"{len(PHRASES)} phrases per 640x480 frame, {args.rounds} x {FRAMES} frames after 1 warm-up:")
    print(f"  {'':<27}{'median':>9}    {'min':>9}")
    for key, label in (("floor", "floor: image tower only"), ("backend", "backend, phrases cached"),
                       ("pipeline", "transformers pipeline")):
        print(f"  {label:<27}{median[key] * 1000:9.1f} ms {best[key] * 1000:9.1f} ms")
    over_floor = median["backend"] / median["floor"]
    over_pipeline = median["pipeline"] / median["backend"]
    print(f"backend / floor = {over_floor:.2f} median, {best['backend'] / best['floor']:.2f} min "
          f"(target <= {MAX_OVER_FLOOR:.2f}: {'met' if over_floor <= MAX_OVER_FLOOR else 'NOT met'})")
    print(f"pipeline / backend = {over_pipeline:.2f}x median, {best['pipeline'] / best['backend']:.2f}x min "
          f"(target >= {MIN_OVER_PIPELINE:.0f}x: {'met' if over_pipeline >= MIN_OVER_PIPELINE else 'NOT met'}); "
          f"total run {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
