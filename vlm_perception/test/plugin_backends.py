"""Backends defined in the tests and loaded by the node as `plugin_backends:ColorBackend`.

They give exact, deterministic answers so integration tests can check what
the node does with them: each phrase is a pure colour, found by thresholding.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from vlm_perception.backends.base import Detection
from vlm_perception.bag.sample_bag import OBJECT_COLORS

COLORS = OBJECT_COLORS  # what vlm_perception_sample_bag draws, so replays can be scored
FOUND_SCORE = 0.9
ABSENT_SCORE = 0.02


def paint(image: np.ndarray, label: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """Draw the colour of `label` into image[y0:y1, x0:x1] (RGB)."""
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = COLORS[label]
    return image


class ColorBackend:
    """Finds each known phrase as a block of its colour; unknown phrases are absent."""

    def __init__(self, model: str = "", model_path: str = "", device: str = "auto",
                 delay_s: float = 0.0) -> None:
        self.delay_s = float(delay_s)

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        if self.delay_s:
            time.sleep(self.delay_s)
        detections = []
        for label in labels:
            color = COLORS.get(label)
            mask = np.all(np.abs(image.astype(np.int16) - color) < 12, axis=2) if color else None
            if mask is None or not mask.any():
                detections.append(Detection(label, ABSENT_SCORE, None))
                continue
            ys, xs = np.nonzero(mask)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            detections.append(Detection(label, FOUND_SCORE, box))
        return detections


class SlowColorBackend(ColorBackend):
    """ColorBackend that takes 300 ms a call: a model slower than a 10 Hz camera (lockstep replay tests)."""

    def __init__(self, model: str = "", model_path: str = "", device: str = "auto", delay_s: float = 0.3) -> None:
        super().__init__(model, model_path, device, delay_s)


class BrokenBackend:
    """Raises on every image: the node must answer success: false and keep serving."""

    def __init__(self, **options: object) -> None:
        pass

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        raise RuntimeError("simulated CUDA out of memory")


class FailingToLoadBackend:
    def __init__(self, **options: object) -> None:
        raise OSError("weights file is corrupt")

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        raise AssertionError("never constructed")


def install_plugin(site: Path, name: str) -> Path:
    """A tiny installed distribution in `site` whose module `name` declares its ColorBackend
    subclass as backend plugin `name` (entry-point group vlm_perception.backends), the way
    `pip install` leaves one; put `site` on sys.path or PYTHONPATH to use it."""
    (site / f"{name}.py").write_text(
        "from plugin_backends import ColorBackend\n\n\n"
        "class ColorPlugin(ColorBackend):\n    \"\"\"ColorBackend, found by its entry-point name.\"\"\"\n")
    dist_info = site / f"{name}-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[vlm_perception.backends]\n{name} = {name}:ColorPlugin\n")
    return site
