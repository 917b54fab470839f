"""Frames and timing shared by the model benchmarks."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch


def camera_frame(seed: int) -> np.ndarray:
    """A 640x480 image with shading, structure and noise (more like a camera frame than pure noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    fx, fy, phase = rng.uniform(20, 60), rng.uniform(20, 60), rng.uniform(0, 2 * np.pi)
    smooth = np.stack([x / 640, y / 480, (np.sin(x / fx + phase) * np.cos(y / fy) + 1) / 2], axis=-1) * 200
    return (smooth + rng.normal(0, 20, smooth.shape)).clip(0, 255).astype(np.uint8)


def new_frame(pixels: np.ndarray) -> np.ndarray:
    """A new read-only array, as the engine hands over each new frame."""
    frame = pixels.copy()
    frame.flags.writeable = False
    return frame


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Seconds `run` takes, waiting for queued GPU work."""
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
