"""Multi-phrase speed-up of the OWLv2 backend's caches over plain forward passes.

The full-size OWLv2 base architecture (ViT-B/16 at 960 px, the compute of
google/owlv2-base-patch16-ensemble) is built with random weights, saved and
loaded through the backend, so nothing is downloaded and the real loading path
runs. On one 640x480 frame, five phrases:

- backend, cold: a new frame and an empty phrase cache (both towers run once);
- backend, warm: a new frame, phrases cached (standing queries on a new frame);
- backend, same frame: the frame and phrases cached (another query on the frame);
- plain: five transformers forward() passes, one phrase each, on the same pixel
  values (preprocessing not counted, which favours the plain path).

Target: the backend answers five phrases at least 3x faster than five forwards.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may come from a model hub

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "vlm_perception"), str(ROOT / "vlm_perception" / "test")]

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Owlv2Config  # noqa: E402

from bench_support import camera_frame, new_frame, timed  # noqa: E402
from tiny_models import save_owl  # noqa: E402
from vlm_perception.backends.owl import Owlv2Backend  # noqa: E402
from vlm_perception.core.errors import BackendLoadError  # noqa: E402

PHRASES = ["a person", "a red cup", "a laptop computer", "a potted plant", "a cardboard box"]
TARGET_SPEEDUP = 3.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed repeats after one warm-up, median reported (~100 s each on 2 CPU cores)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    transformers.utils.logging.disable_progress_bar()
    started = time.perf_counter()
    config = Owlv2Config(vision_config={"image_size": 960})  # the default is 768; OWLv2 base runs at 960
    with tempfile.TemporaryDirectory(prefix="owlv2-base-random-") as model_dir:
        save_owl(model_dir, "owlv2", config)
        load_start = time.perf_counter()
        try:
            backend = Owlv2Backend(model_path=model_dir, device=args.device)
        except BackendLoadError as exc:
            print(f"cannot start the backend: {exc}", file=sys.stderr)
            return 1
        load_s = time.perf_counter() - load_start
    device = backend.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"device: {device} ({name}); torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"transformers {transformers.__version__}")
    vision = config.vision_config
    print(f"model: OWLv2 base, random weights, {vision.image_size} px, patch {vision.patch_size}, "
          f"{sum(p.numel() for p in backend.model.parameters()) / 1e6:.0f}M parameters; loaded in {load_s:.1f} s")

    pixels = camera_frame(0)
    with torch.inference_mode():
        pixel_values = backend._preprocess(pixels)
    tokens = [backend.tokenizer([p], padding="max_length", truncation=True, max_length=16, return_tensors="pt")
              .to(device) for p in PHRASES]

    def forward(phrase_tokens: dict[str, torch.Tensor]) -> None:
        with torch.inference_mode():
            backend.model(input_ids=phrase_tokens["input_ids"], attention_mask=phrase_tokens["attention_mask"],
                          pixel_values=pixel_values)

    def plain() -> None:
        for phrase_tokens in tokens:
            forward(phrase_tokens)

    def cold() -> None:
        backend.clear_caches()
        backend.detect(new_frame(pixels), PHRASES)

    times: dict[str, list[float]] = {"plain": [], "cold": [], "warm": [], "same frame": []}
    timed(cold, device)  # warm-up: allocator, kernels, thread pools
    timed(lambda: forward(tokens[0]), device)
    for _ in range(args.repeats):
        times["plain"].append(timed(plain, device))
        times["cold"].append(timed(cold, device))
        warm_frame = new_frame(pixels)
        times["warm"].append(timed(lambda: backend.detect(warm_frame, PHRASES), device))
        times["same frame"].append(timed(lambda: backend.detect(warm_frame, PHRASES), device))

    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(PHRASES)} phrases on one 640x480 frame, median of {args.repeats} after 1 warm-up:")
    print(f"  plain forward x{len(PHRASES)}          {median['plain'] * 1000:9.1f} ms")
    for key, label in (("cold", "backend, cold text cache"), ("warm", "backend, warm text cache"),
                       ("same frame", "backend, frame cached")):
        print(f"  {label:<27}{median[key] * 1000:9.1f} ms  speed-up {median['plain'] / median[key]:7.1f}x")
    speedup = median["plain"] / median["cold"]
    verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
    print(f"target >= {TARGET_SPEEDUP:.0f}x with a cold text cache: {verdict} ({speedup:.1f}x); "
          f"total run {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
