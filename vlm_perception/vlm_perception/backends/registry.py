"""Builds a backend from the node's `backend` parameter.

A built-in name ("owlv2"), the name of a plugin an installed package declares
in the `vlm_perception.backends` entry-point group (as pluginlib finds C++
plugins), or a user's class as "package.module:ClassName". Built-ins are
imported lazily so a plugin user never pays for transformers.
"""
from __future__ import annotations

import importlib
import importlib.metadata
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

ENTRY_POINT_GROUP = "vlm_perception.backends"

# Passed to every backend whose constructor accepts them; extra options must be accepted.
COMMON_OPTIONS = ("model", "model_path", "device", "precision", "runtime")

# Options that make transformers import and run Python code shipped with a model
# (its directory or hub repo). Refused for every backend, plugins included, at any depth.
CODE_RUNNING_OPTIONS = ("trust_remote_code",)


def create_backend(name: str, options: Mapping[str, Any]) -> Backend:
    """The constructed backend, or BackendLoadError saying what to fix."""
    _refuse_code_running_options(options)
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
            f"backend '{name}' does not implement detect(image, labels); see README, 'Your own backend'"
        )
    return backend


def installed_plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Backend plugins that installed packages declare, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _refuse_code_running_options(options: Any, where: str = "backend_options") -> None:
    if isinstance(options, Mapping):
        for key, value in options.items():
            if key in CODE_RUNNING_OPTIONS and value not in (False, None):
                raise BackendLoadError(
                    f"{where}: {key} is refused: it lets transformers import and run Python code that comes "
                    "with a model (its directory or hub repo). Remove it; a model that needs its own code "
                    "can be run by a backend plugin that imports that code from an installed package "
                    "(see README, 'Your own backend')")
            _refuse_code_running_options(value, f"{where}.{key}")
    elif isinstance(options, (list, tuple)):
        for index, value in enumerate(options):
            _refuse_code_running_options(value, f"{where}[{index}]")


def _resolve(name: str) -> type:
    if name in BUILTIN_BACKENDS:
        spec = BUILTIN_BACKENDS[name]
    elif name in (plugins := installed_plugins()):
        return _load_plugin(plugins[name])
    elif ":" in name:
        spec = name
    else:
        raise BackendLoadError(
            f"unknown backend '{name}'; use one of {', '.join(BUILTIN_BACKENDS)}, an installed plugin "
            f"({', '.join(sorted(plugins)) or f'none declares entry-point group {ENTRY_POINT_GROUP}'}) "
            "or 'package.module:ClassName' for your own class"
        )
    module_name, _, class_name = spec.partition(":")
    if not module_name or module_name.startswith(".") or not class_name:
        raise BackendLoadError(f"backend '{name}' is not 'package.module:ClassName' (an absolute module name, "
                               "a colon, a class name)")
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


def _load_plugin(entry_point: importlib.metadata.EntryPoint) -> type:
    where = f"plugin '{entry_point.name}' ({entry_point.value}, entry-point group {ENTRY_POINT_GROUP})"
    try:
        loaded = entry_point.load()
    except Exception as exc:  # whatever the plugin's import raises
        raise BackendLoadError(f"cannot load {where}: {type(exc).__name__}: {exc}; "
                               "check that its package and dependencies are installed") from exc
    if not inspect.isclass(loaded):
        raise BackendLoadError(f"{where} names a {type(loaded).__name__}, not a backend class")
    return loaded


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
