"""Helpers every built-in backend shares: option checks, device choice, model loading.

Kept free of any one model family so CLIP, generative, OWL and offline
backends report the same problems with the same words.
"""
from __future__ import annotations

from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, TypeVar

import numpy as np

from ..core.errors import BackendError, BackendLoadError

# The yes/no question generative and remote backends score presence with; {} is the phrase.
# "any" reads right for singular, plural and mass nouns (the query parser drops articles).
YES_NO_PROMPT = "Is there any {} in the image? Answer yes or no."

if TYPE_CHECKING:  # torch is imported lazily: the remote backend does not need it
    import torch

T = TypeVar("T")


def option(name: str, value: Any, cast: Callable[[Any], Any], valid: Callable[[Any], bool], expected: str) -> Any:
    """`value` converted by `cast`, or BackendLoadError naming the option and what it must be."""
    try:
        converted = cast(value)
    except (TypeError, ValueError):
        converted = None
    if converted is None or not valid(converted):
        raise BackendLoadError(f"option {name}={value!r} is invalid: it must be {expected}")
    return converted


def reject_unknown(backend: str, unknown: dict[str, Any], accepted: str) -> None:
    """BackendLoadError for keyword options a backend does not take."""
    if unknown:
        raise BackendLoadError(
            f"backend '{backend}' does not take option(s) {', '.join(sorted(unknown))}; it takes {accepted}")


def resolve_device(device: str) -> "torch.device":
    """'auto' -> cuda when available, else cpu; BackendLoadError for an unusable device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BackendLoadError(f"device '{device}' is not a torch device; use auto, cpu or cuda") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendLoadError(
            f"device '{device}' was asked for but CUDA is not available to torch {torch.__version__}; "
            "use device 'auto' or 'cpu'"
        )
    return resolved


def check_image(image: Any) -> None:
    """BackendError unless `image` is an RGB uint8 array of shape (H, W, 3)."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise BackendError(f"expected an RGB uint8 image of shape (H, W, 3), got {got}")


def asked_phrases(image: Any, labels: Sequence[str]) -> list[str]:
    """The distinct labels in the order asked, after check_image (BackendError for a bad image)."""
    check_image(image)
    return list(dict.fromkeys(labels))


@contextmanager
def inference(family: str, image: np.ndarray, errors: tuple[type[Exception], ...] = (RuntimeError,)) -> Iterator[None]:
    """torch.inference_mode, with `errors` (out of memory included) raised as BackendError naming the image."""
    import torch

    try:
        with torch.inference_mode():
            yield
    except errors as exc:
        height, width = image.shape[:2]
        raise BackendError(f"{family} inference failed on a {width}x{height} image: {first_line(exc)}") from exc


def first_line(exc: Optional[BaseException]) -> str:
    """'ErrorType: first line of the message', short enough for a log line or a service reply."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else 'no details'}"


def pretrained_options(local_only: bool) -> dict[str, Any]:
    """Keyword arguments for every from_pretrained call of the built-in backends.

    trust_remote_code=False: a model directory or hub repo whose config names its own
    Python code (auto_map) is refused instead of imported, and transformers never asks
    on stdin. Weights come from safetensors, or from torch.load(weights_only=True),
    transformers 5's default, so a pickled checkpoint cannot run code either.
    """
    return {"local_files_only": local_only, "trust_remote_code": False}


def load_pretrained(family: str, model: str, model_path: str, load: Callable[[str, bool], T]) -> T:
    """Run `load(source, local_files_only)` for a hub id or a local directory.

    A hub id is tried from the local cache first, so a cached model never waits
    on the network. `load` may raise BackendLoadError itself (e.g. for a model of
    the wrong family); any other exception becomes one BackendLoadError that
    says where the model was looked for and what to do.
    """
    if model_path:
        source = str(Path(model_path).expanduser())
        where = f"model_path '{model_path}'"
        advice = (
            f"set model_path to a local directory holding a {family} model saved with save_pretrained "
            "(config, weights, tokenizer and processor files)"
        )
        if not Path(source).is_dir():
            raise BackendLoadError(f"cannot load {family} model from {where}: no such directory; {advice}")
        attempts: tuple[bool, ...] = (True,)
    else:
        source, where = model, f"'{model}'"
        advice = (
            "set model_path to a local directory holding the model (saved with save_pretrained), "
            "or run once with network access to cache it"
        )
        attempts = (True, False)
    failure: Optional[Exception] = None
    for local_only in attempts:
        try:
            return load(source, local_only)
        except BackendLoadError:
            raise
        except Exception as exc:  # transformers raises OSError, ValueError and more for bad model files
            failure = exc
    raise BackendLoadError(f"cannot load {family} model from {where} ({first_line(failure)}); {advice}") from failure
