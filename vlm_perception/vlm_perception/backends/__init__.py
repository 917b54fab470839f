"""Backends: the protocol, the registry, and one module per model family."""
from .base import Backend, Box, Detection
from .registry import BUILTIN_BACKENDS, create_backend

__all__ = ["Backend", "Box", "Detection", "BUILTIN_BACKENDS", "create_backend"]
