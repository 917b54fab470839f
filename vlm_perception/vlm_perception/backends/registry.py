"""Builds a backend from the node's `backend` parameter.

A built-in name ("owlv2") or a user's class as "package.module:ClassName".
Built-ins are imported lazily so a plugin user never pays for transformers.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping

from ..core.errors import BackendLoadError
from .base import Backend

BUILTIN_BACKENDS: dict[str, str] = {
    "owlv2": "vlm_perception.backends.owl:Owlv2Backend",
    "owlvit": "vlm_perception.backends.owl:OwlVitBackend",
    "clip": "vlm_perception.backends.clip:ClipBackend",
    "generative": "vlm_perception.backends.generative:GenerativeBackend",
    "remote": "vlm_perception.backends.remote:RemoteBackend",
    "offline": "vlm_perception.backends.offline:OfflineBackend",
}

# Passed to every backend whose constructor accepts them; extra options must be accepted.
COMMON_OPTIONS = ("model", "model_path", "device", "precision", "runtime")


def create_backend(name: str, options: Mapping[str, Any]) -> Backend:
    """The constructed backend, or BackendLoadError saying what to fix."""
    backend_class = _resolve(name)
    kwargs = _accepted_kwargs(name, backend_class, options)
    try:
        backend = backend_class(**kwargs)
    except BackendLoadError:
        raise
    except Exception as exc:
        raise BackendLoadError(f"backend '{name}' failed to start: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(backend, "detect", None)):
        raise BackendLoadError(
            f"backend '{name}' does not implement detect(image, labels); see the backend protocol in README"
        )
    return backend


def _resolve(name: str) -> type:
    spec = BUILTIN_BACKENDS.get(name, name)
    if ":" not in spec:
        raise BackendLoadError(
            f"unknown backend '{name}'; use one of {', '.join(BUILTIN_BACKENDS)} "
            "or 'package.module:ClassName' for your own class"
        )
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendLoadError(
            f"cannot import module '{module_name}' for backend '{name}': {exc}; "
            "check that it is installed or on PYTHONPATH"
        ) from exc
    backend_class = getattr(module, class_name, None)
    if not inspect.isclass(backend_class):
        raise BackendLoadError(f"module '{module_name}' has no class '{class_name}' (backend '{name}')")
    return backend_class


def _accepted_kwargs(name: str, backend_class: type, options: Mapping[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(backend_class).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if takes_any:
        return dict(options)
    rejected = [k for k in options if k not in parameters and k not in COMMON_OPTIONS]
    if rejected:
        raise BackendLoadError(
            f"backend '{name}' does not take option(s) {', '.join(sorted(rejected))}; "
            f"it takes: {', '.join(parameters) or 'none'}"
        )
    return {k: v for k, v in options.items() if k in parameters}
