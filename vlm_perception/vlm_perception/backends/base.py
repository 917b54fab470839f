"""The backend protocol: the one seam every model family plugs into.

A backend is a class built from the node's `backend` parameter with the
backend parameters as keyword arguments. Images are RGB uint8 arrays of shape
(H, W, 3). `detect` is the minimum; `answer` is optional.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

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
