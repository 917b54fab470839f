"""An image tower run by OpenVINO on the CPU: exported once from its PyTorch module, cached on disk.

Export: openvino.convert_model traces the PyTorch module with an example input
(no ONNX file, no onnx package). The saved IR keeps f32 weights
(compress_to_fp16=False); precision is a compile-time hint, so one cached
export serves fp32 and bf16. Where the CPU lacks bf16 units OpenVINO runs f32
whatever the hint; `precision` says what it really runs.

Cache: $XDG_CACHE_HOME/vlm_perception/openvino/<key>/ (default ~/.cache), key =
sha256 of the module's weights as loaded from the model files (names, shapes,
dtypes, bytes), its config, the input shape and the openvino and torch
versions. Hashing the loaded weights rather than the files works the same for
a local model_path and a hub id (whose files lie in the hub cache under other
names); changed model files change the weights, hence the key, hence a new
export. An export is written to a temporary directory and renamed, so an
interrupted one never leaves a half-written model that a later start loads.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..core.errors import BackendLoadError

INSTALL_HINT = "pip install -r requirements-openvino.txt (or the package's [openvino] extra)"
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_PRECISIONS = {hint: precision for precision, hint in _HINTS.items()}
_FORMAT = "1"  # bump when what is exported for the same weights changes


def import_openvino() -> Any:
    """The openvino module, or a one-line BackendLoadError saying what to install."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendLoadError(f"runtime 'openvino' needs the openvino package, which is not installed: "
                               f"{INSTALL_HINT}; or use runtime torch") from exc
    return openvino


def cache_root() -> Path:
    """Where exported towers are kept: $XDG_CACHE_HOME/vlm_perception/openvino."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vlm_perception" / "openvino"


class OpenVinoTower:
    """`run(model, pixels)` for (1, 3, side, side) fp32 pixels, compiled by OpenVINO for the CPU.

    `model` is a transformers model in fp32; `run` is the part of it to export
    (e.g. its image tower). precision (a hint) is fp32, bf16 or fp16.
    exported: whether this load converted the model (False: it came from the cache).
    precision: what OpenVINO infers in (fp32 where the CPU cannot do the hint).
    """

    def __init__(self, name: str, model: torch.nn.Module, run: Callable[[Any, torch.Tensor], torch.Tensor],
                 side: int, precision: str) -> None:
        ov = import_openvino()
        module, example = _Part(model, run), torch.zeros(1, 3, side, side)
        key = _cache_key(module, example, model.config.to_json_string(), ov.__version__)
        self.path = cache_root() / f"{name}-{key}"
        xml = self.path / "tower.xml"
        self.exported = not xml.is_file()
        if self.exported:
            _export(ov, module, example, xml)
        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(str(xml)), "CPU", {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",  # one frame at a time: all cores on one request
        })
        self.precision = _PRECISIONS.get(self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                                         precision)
        self._request = self._compiled.create_infer_request()

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self._request.infer({0: pixels.numpy()})
        return tuple(torch.from_numpy(result[output]) for output in self._compiled.outputs)


class ImageTowerRuntime:
    """For backends whose image tower may run in OpenVINO (owl, clip).

    The backend sets `precision`, `family` and `model` (fp32, a transformers
    model with a vision_config), then `_image_tower` to None (PyTorch) or to
    `self._openvino_image_tower(run)`, `run` being its pixels -> features path.
    """

    precision: str
    family: str
    model: Any
    _image_tower: Optional[OpenVinoTower]

    @property
    def image_tower_precision(self) -> str:
        """What the image tower really runs in (OpenVINO runs fp32 where the CPU lacks the hinted format)."""
        return self.precision if self._image_tower is None else self._image_tower.precision

    def _openvino_image_tower(self, run: Callable[[Any, torch.Tensor], torch.Tensor]) -> OpenVinoTower:
        """The image tower in OpenVINO, exported from the fp32 model at the model's input size."""
        side = self.model.config.vision_config.image_size
        return OpenVinoTower(f"{self.family}-image", self.model, run, side, self.precision)


class _Part(torch.nn.Module):
    """One path through a model as a module of its own, for tracing."""

    def __init__(self, model: torch.nn.Module, run: Callable[[Any, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self._run = model, run

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._run(self.model, pixel_values)


def _cache_key(module: torch.nn.Module, example: torch.Tensor, config_json: str, ov_version: str) -> str:
    digest = hashlib.sha256()
    for part in (_FORMAT, ov_version, torch.__version__, str(tuple(example.shape)), config_json):
        digest.update(part.encode() + b"\0")
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def _export(ov: Any, module: torch.nn.Module, example: torch.Tensor, xml: Path) -> None:
    xml.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml.parent.parent, prefix=".export-") as staging:
        with torch.no_grad(), warnings.catch_warnings():
            # The trace fixes the input shape, as intended: its warnings about that are noise here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            converted = ov.convert_model(module, example_input=example)
        ov.save_model(converted, str(Path(staging) / xml.name), compress_to_fp16=False)
        try:
            os.replace(staging, xml.parent)
        except OSError:  # another process finished the same export first: use theirs
            if not xml.is_file():
                raise
        os.makedirs(staging, exist_ok=True)  # TemporaryDirectory removes it on exit
