"""What backend tests share: read-only frames as the engine hands them over, and forward-call counters."""
from __future__ import annotations

import numpy as np
import torch


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A read-only random RGB image, as the engine hands frames over."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image.flags.writeable = False
    return image


class CallCounter:
    """Counts real forward calls of a module and the batch size of each."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        first = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        self.batches.append(first.shape[0])

    def remove(self) -> None:
        self._handle.remove()
