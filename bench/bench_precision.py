"""Precision and runtime paths of the owl and clip backends on full-size random models, same run, same frames.

OWLv2-base (ViT-B/16, 768 px by default) and CLIP ViT-B/32 (224 px) are built
with random weights, saved and loaded through the backends. For each path
(PyTorch fp32, PyTorch bf16, OpenVINO f32, OpenVINO bf16), on the same 640x480
frames:

- image tower: the backend's per-frame encoding (preprocessing, image tower,
  and for OWL the box head), the cost a new frame adds;
- evaluation: detect() for 5 phrases on a new frame, phrases cached (a standing
  query on a new frame), what the node's inference_ms shows;
- agreement with PyTorch fp32 on the same frame: min cosine of the image
  embeddings (per patch for OWL), largest box difference in pixels, largest
  score difference.

Ratios are against PyTorch fp32 measured in the same run. Targets, on a CPU with
bf16 matrix units (AMX): OWLv2 best path >= 3.5x, CLIP best path >= 3x. On a CPU
without them bf16 is emulated and slower than fp32, and OpenVINO runs f32 for a
bf16 hint, so the OWL bf16 paths are skipped there unless --all-paths (the CLIP
ones are cheap and always run). OpenVINO exports go to the normal cache
($XDG_CACHE_HOME/vlm_perception/openvino): the first run exports, later runs load.
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
from typing import Any, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may come from a model hub
# As the node sets it: spinning OpenMP workers make PyTorch many times slower when other work shares the CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "vlm_perception"), str(ROOT / "vlm_perception" / "test")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import CLIPConfig, Owlv2Config  # noqa: E402

from bench_support import camera_frame, new_frame, timed  # noqa: E402
from tiny_clip import save_clip  # noqa: E402
from tiny_models import save_owl  # noqa: E402
from vlm_perception.backends.clip import DEFAULT_NEGATIVES, DEFAULT_TEMPLATES, ClipBackend  # noqa: E402
from vlm_perception.backends.owl import OwlBackend  # noqa: E402
from vlm_perception.backends.precision import CPU_BF16_FLAGS, cpu_flags  # noqa: E402
from vlm_perception.core.errors import BackendLoadError  # noqa: E402

PHRASES = ["person", "red cup", "laptop computer", "potted plant", "cardboard box"]
PATHS: dict[str, dict[str, str]] = {
    "torch fp32": {"runtime": "torch", "precision": "fp32"},
    "torch bf16": {"runtime": "torch", "precision": "bf16"},
    "openvino f32": {"runtime": "openvino", "precision": "fp32"},
    "openvino bf16": {"runtime": "openvino", "precision": "bf16"},
}
TARGETS = {"owlv2": 3.5, "clip": 3.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--owl-size", type=int, default=768, help="OWLv2 input side (768; the ensemble model: 960)")
    parser.add_argument("--owl-rounds", type=int, default=1, help="timed OWL rounds over the paths after a warm-up")
    parser.add_argument("--clip-rounds", type=int, default=6, help="timed CLIP rounds over the paths")
    parser.add_argument("--all-paths", action="store_true", help="also the OWL bf16 paths on CPUs without bf16")
    parser.add_argument("--models", default="clip,owlv2", help="comma-separated: clip, owlv2")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    flags = cpu_flags()
    has_bf16 = any(flag in flags for flag in CPU_BF16_FLAGS)
    relevant = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "avx_vnni")))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads, capability {torch.backends.cpu.get_cpu_capability()}, OMP_WAIT_POLICY "
          f"{os.environ['OMP_WAIT_POLICY']}), openvino {openvino_version()}")
    print(f"CPU flags: {' '.join(relevant) or 'none of avx2/avx512/amx'}; bf16 units "
          f"({'/'.join(CPU_BF16_FLAGS)}): {'yes' if has_bf16 else 'NO (auto = fp32 here)'}; "
          f"load average {os.getloadavg()[0]:.1f} (other work on the CPU slows every path alike)")
    frames = [camera_frame(seed) for seed in range(3)]
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        for model in args.models.split(","):
            if model == "owlv2":
                model_dir = save_owl(Path(tmp) / "owlv2", "owlv2", Owlv2Config(vision_config={
                    "image_size": args.owl_size}))
                paths = [p for p in PATHS if has_bf16 or args.all_paths or "bf16" not in p]
                title = f"OWLv2-base patch16 {args.owl_size} px"
                failed |= not run_model("owlv2", title, lambda **o: OwlBackend("owlv2", model_path=str(model_dir),
                                                                               device="cpu", **o),
                                        paths, frames, args.owl_rounds, OWL_PROBE)
            elif model == "clip":
                words = re.findall(r"[a-z]+", " ".join([*PHRASES, *DEFAULT_TEMPLATES, *DEFAULT_NEGATIVES]).lower())
                model_dir = save_clip(Path(tmp) / "clip", "clip", CLIPConfig(), words=words)
                failed |= not run_model("clip", "CLIP ViT-B/32 224 px",
                                        lambda **o: ClipBackend(model_path=str(model_dir), device="cpu", **o),
                                        list(PATHS), frames, args.clip_rounds, CLIP_PROBE)
            else:
                print(f"unknown model '{model}'; use clip or owlv2", file=sys.stderr)
                return 2
    return 1 if failed else 0


class Probe:
    """How to read one family's frame encoding: an embedding per row, and boxes where it localizes."""

    def __init__(self, embeddings: Callable[[Any], torch.Tensor], boxes: Callable[[Any], Optional[np.ndarray]]):
        self.embeddings, self.boxes = embeddings, boxes


OWL_PROBE = Probe(lambda encoded: encoded.image_feats[0], lambda encoded: encoded.boxes)
CLIP_PROBE = Probe(lambda encoded: encoded[None], lambda encoded: None)


def run_model(name: str, title: str, load: Callable[..., Any], paths: list[str], frames: list[np.ndarray],
              rounds: int, probe: Probe) -> bool:
    """Times every path on the same frames, interleaved; prints the table; False if a path failed to load."""
    print(f"== {title}, random weights; {len(PHRASES)} phrases per 640x480 frame, {rounds} timed round(s) "
          "after a warm-up, paths interleaved in rotating order (load on the CPU hits them alike)")
    backends, loads, ok = {}, {}, True
    for path in paths:
        load_start = time.perf_counter()
        try:
            backends[path] = load(**PATHS[path])
        except BackendLoadError as exc:
            print(f"  {path}: not run: {exc}")
            ok = False
            continue
        tower = getattr(backends[path], "_image_tower", None)
        how = ("exported" if tower.exported else "cached export") if tower is not None else "PyTorch"
        loads[path] = f"{time.perf_counter() - load_start:.0f} s ({how})"
        backends[path].detect(new_frame(frames[0]), PHRASES)  # warm-up; fills the phrase cache
    if "torch fp32" not in backends:
        return False
    tower_s: dict[str, list[float]] = {path: [] for path in backends}
    evaluation_s: dict[str, list[float]] = {path: [] for path in backends}
    outputs: dict[str, tuple] = {}
    order = list(backends)
    for _ in range(rounds):
        for path in order:
            backend, encoded, detections = backends[path], [], []
            with torch.inference_mode():
                tower_s[path].append(timed(lambda: encoded.append(backend._encode_frame(frames[1])), backend.device))
            evaluation_s[path].append(timed(lambda: detections.extend(backend.detect(new_frame(frames[2]), PHRASES)),
                                            backend.device))
            outputs[path] = (probe.embeddings(encoded[0]).float(), probe.boxes(encoded[0]),
                             detection_scores(detections))
        order = order[1:] + order[:1]
    tower = {path: statistics.median(v) for path, v in tower_s.items()}
    evaluation = {path: statistics.median(v) for path, v in evaluation_s.items()}
    base_tower, base_eval = tower["torch fp32"], evaluation["torch fp32"]
    print(f"  {'path':<15}{'tower runs':>11}{'image tower':>13}{'ratio':>7}{'5 phrases':>12}{'ratio':>7}"
          f"   {'agreement with torch fp32 (same frames)':<46} load")
    for path, backend in backends.items():
        print(f"  {path:<15}{backend.image_tower_precision:>11}{tower[path] * 1000:11.0f} ms"
              f"{base_tower / tower[path]:6.2f}x{evaluation[path] * 1000:10.0f} ms{base_eval / evaluation[path]:6.2f}x"
              f"   {agreement(outputs[path], outputs['torch fp32']):<46} {loads[path]}")
    best_path = min(evaluation, key=evaluation.__getitem__)
    best = base_eval / evaluation[best_path]
    target = TARGETS[name]
    print(f"  best path: {best_path}, {best:.2f}x PyTorch fp32 per evaluation "
          f"(target >= {target}x on a CPU with bf16 units: {'met' if best >= target else 'NOT met'})")
    return ok


def detection_scores(detections: list) -> dict[str, float]:
    return {label: max(d.score for d in detections if d.label == label) for label in PHRASES}


def agreement(current: tuple, reference: tuple) -> str:
    embeds, boxes, scores = current
    ref_embeds, ref_boxes, ref_scores = reference
    cosine = F.cosine_similarity(embeds, ref_embeds, dim=-1).min().item()
    text = f"cos >= {cosine:.5f}"
    if boxes is not None:
        text += f", boxes {np.abs(boxes - ref_boxes).max():.2f} px"
    return text + f", scores {max(abs(scores[p] - ref_scores[p]) for p in PHRASES):.4f}"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def openvino_version() -> str:
    try:
        import openvino
    except ImportError:
        return "not installed"
    return openvino.__version__.split("-")[0]


if __name__ == "__main__":
    sys.exit(main())
