"""Runs a backend on a frame for a set of phrases and decides presence.

The engine is the one place that turns backend scores into presence
decisions and 2D targets, so every backend is judged by the same rules.
Backend calls are serialised: models are not assumed thread-safe, and on one
device parallel inference would not be faster.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..backends.base import Backend, Box, Detection, default_threshold, localizes
from .errors import BackendError


@dataclass(frozen=True)
class Presence:
    query: str
    present: bool
    confidence: float  # best score for the phrase, 0..1
    threshold: float
    count: int  # localized matches at or above threshold


@dataclass(frozen=True)
class Target2D:
    query: str
    score: float
    box: Box  # x0, y0, x1, y1 in source-image pixels

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0

    @property
    def size(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return x1 - x0, y1 - y0


@dataclass(frozen=True)
class SceneResult:
    presence: list[Presence]  # one per phrase, in the order asked
    targets: list[Target2D]  # localized matches at or above threshold, best first
    inference_ms: float

    @property
    def answer(self) -> str:
        return presence_answer(self.presence)


def presence_answer(presence: Sequence[Presence]) -> str:
    """'Yes: apple (0.83). No: banana (0.07).'"""
    parts = []
    for verdict, present in (("Yes", True), ("No", False)):
        items = [f"{p.query} ({p.confidence:.2f})" for p in presence if p.present == present]
        if items:
            parts.append(f"{verdict}: {', '.join(items)}.")
    return " ".join(parts)


class PerceptionEngine:
    def __init__(self, backend: Backend, backend_name: str) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self._lock = threading.Lock()

    @property
    def localizes(self) -> bool:
        """Whether the backend gives boxes (and so 2D targets)."""
        return localizes(self.backend)

    @property
    def default_threshold(self) -> float:
        """The backend's recommended presence threshold."""
        return default_threshold(self.backend)

    @property
    def answers_questions(self) -> bool:
        """Whether the backend gives free-form answers to open questions."""
        return callable(getattr(self.backend, "answer", None))

    def evaluate(self, image: np.ndarray, phrases: Sequence[str], threshold: float) -> SceneResult:
        with self._lock:
            start = time.perf_counter()
            detections = self._call("detect", self.backend.detect, image, list(phrases))
            inference_ms = (time.perf_counter() - start) * 1000.0
        checked = [self._checked(d, phrases, image.shape) for d in detections]
        return SceneResult(
            presence=[_presence(p, checked, threshold) for p in phrases],
            targets=sorted(
                (Target2D(d.label, d.score, d.box) for d in checked
                 if d.box is not None and d.score >= threshold),
                key=lambda t: t.score,
                reverse=True,
            ),
            inference_ms=inference_ms,
        )

    def answer(self, image: np.ndarray, question: str) -> tuple[str, float]:
        """Free-form answer and inference time in ms; only for backends with `answer`."""
        with self._lock:
            start = time.perf_counter()
            text = self._call("answer", self.backend.answer, image, question)  # type: ignore[attr-defined]
            return str(text).strip(), (time.perf_counter() - start) * 1000.0

    def _call(self, what: str, method, *args):
        try:
            return method(*args)
        except Exception as exc:  # a plugin may raise anything; the node must keep serving
            raise BackendError(
                f"backend '{self.backend_name}' failed in {what}(): {type(exc).__name__}: {exc}"
            ) from exc

    def _checked(self, detection: Detection, phrases: Sequence[str], shape: tuple[int, ...]) -> Detection:
        """Reject what a broken backend could return instead of publishing nonsense."""
        name = self.backend_name
        if detection.label not in phrases:
            raise BackendError(f"backend '{name}' returned label '{detection.label}' that was not asked for")
        if not (math.isfinite(detection.score) and 0.0 <= detection.score <= 1.0):
            raise BackendError(f"backend '{name}' returned score {detection.score} outside 0..1")
        box = detection.box
        if box is None:
            return detection
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise BackendError(f"backend '{name}' returned a malformed box {box}")
        height, width = shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        clipped = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
        if clipped[2] < clipped[0] or clipped[3] < clipped[1]:
            raise BackendError(f"backend '{name}' returned box {box} outside the {width}x{height} image")
        return Detection(detection.label, float(detection.score), clipped)


def _presence(phrase: str, detections: Sequence[Detection], threshold: float) -> Presence:
    scores = [d.score for d in detections if d.label == phrase]
    confidence = max(scores, default=0.0)
    count = sum(1 for d in detections if d.label == phrase and d.box is not None and d.score >= threshold)
    return Presence(phrase, confidence >= threshold, confidence, threshold, count)
