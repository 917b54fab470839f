"""The backend protocol: the one seam every model family plugs into.

A backend is a class built from the node's `backend` parameter with the
backend parameters as keyword arguments. Images are RGB uint8 arrays of shape
(H, W, 3). `detect` is the minimum. Optional members, looked up with getattr so
a plugin that has only `detect` keeps working:

- `answer(image, question) -> str`: free-form answers to open questions.
- `localizes: bool` (default True): False for classify-only backends, whose
  detections never carry boxes; the node then says so instead of reporting
  "no targets found".
- `default_threshold: float` (default DEFAULT_THRESHOLD): the score at which
  this backend's `present` is meant to flip, used when the node's `threshold`
  parameter is 0. Each family's docstring says how its scores are made.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

DEFAULT_THRESHOLD = 0.1  # for plugins that do not say; what OWL-style detectors use

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 in source-image pixels


@dataclass(frozen=True)
class Detection:
    label: str  # the phrase it matches
    score: float  # 0..1
    box: Optional[Box]  # None if the backend does not localize


@runtime_checkable
class Backend(Protocol):
    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        """Score every label on the image; localizing backends give one Detection per object."""
        ...


def localizes(backend: object) -> bool:
    """Whether `backend` gives boxes (plugins that do not say are assumed to)."""
    return bool(getattr(backend, "localizes", True))


def default_threshold(backend: object) -> float:
    """The backend's own presence threshold, or DEFAULT_THRESHOLD."""
    return float(getattr(backend, "default_threshold", DEFAULT_THRESHOLD))
