"""Small caches that let a backend skip repeated encoder work.

Open-vocabulary detectors split into a text tower (per phrase), an image tower
(per frame) and a cheap head that combines them. Standing queries ask the same
phrases on every frame, and several queries often hit the same frame, so each
tower's output is worth keeping. Neither cache is thread-safe: the engine
serialises backend calls.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Callable, Generic, Optional, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


class PhraseCache(Generic[T]):
    """Bounded LRU map from phrase to its embedding."""

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, phrase: object) -> bool:
        return phrase in self._items

    def get_many(self, phrases: Sequence[str], compute_missing: Callable[[list[str]], Sequence[T]]) -> list[T]:
        """Values for `phrases` in order; every missing phrase is computed in one call."""
        missing = [p for p in dict.fromkeys(phrases) if p not in self._items]
        if missing:
            values = compute_missing(missing)
            if len(values) != len(missing):
                raise ValueError(f"compute_missing returned {len(values)} values for {len(missing)} phrases")
            self._items.update(zip(missing, values))
        result = []
        for phrase in phrases:
            self._items.move_to_end(phrase)
            result.append(self._items[phrase])
        # Evict only after collecting, so one call may ask for more than `capacity` phrases.
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return result

    def clear(self) -> None:
        self._items.clear()


class FrameCache(Generic[T]):
    """The features of the most recent frame, keyed by the identity of its array.

    Holding only a weak reference means the cache never keeps a frame alive, and
    a new array that happens to reuse a freed array's id() can never hit. Only
    read-only arrays are cached: a writeable one could change in place behind
    the cache's back (the engine marks its frames read-only).
    """

    def __init__(self) -> None:
        self._ref: Optional[weakref.ReferenceType[np.ndarray]] = None
        self._value: Optional[T] = None

    def get_or_compute(self, image: np.ndarray, compute: Callable[[np.ndarray], T]) -> T:
        if self._ref is not None and self._ref() is image:
            return self._value  # type: ignore[return-value]
        value = compute(image)
        if not image.flags.writeable:
            self._ref, self._value = weakref.ref(image), value
        return value

    def clear(self) -> None:
        self._ref, self._value = None, None
