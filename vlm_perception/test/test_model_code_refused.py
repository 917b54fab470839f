"""Loading a model never runs code that comes with it (README, "Security").

Each test plants code that would create a marker file if it ran: Python files a
model's config names (transformers' remote code), and a pickled checkpoint.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from vlm_perception.backends import create_backend
from vlm_perception.core.errors import BackendLoadError


def code_model_dir(directory: Path, marker: Path) -> Path:
    """A model directory whose config asks transformers to import its own evil.py."""
    directory.mkdir()
    (directory / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    classes = ("AutoConfig", "AutoModel", "AutoModelForImageTextToText", "AutoProcessor", "AutoTokenizer")
    (directory / "config.json").write_text(json.dumps({
        "model_type": "evil_vlm",
        "auto_map": {name: f"evil.Evil{name}" for name in classes},
    }))
    return directory


@pytest.mark.parametrize("backend", ["owlv2", "owlvit", "clip", "generative"])
def test_a_model_directory_with_its_own_code_is_refused_without_running_it(backend, tmp_path):
    marker = tmp_path / "code-ran"
    model_dir = code_model_dir(tmp_path / "model", marker)
    with pytest.raises(BackendLoadError, match="contains custom code which must be executed"):
        create_backend(backend, {"model": "", "model_path": str(model_dir), "device": "cpu"})
    assert not marker.exists()


class _RunsOnUnpickling:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling calls open(marker, "w"): creates the file
        return open, (str(self.marker), "w")


def test_a_pickled_checkpoint_is_loaded_weights_only(tiny_owl_model_dir, tmp_path):
    marker = tmp_path / "code-ran"
    model_dir = Path(shutil.copytree(tiny_owl_model_dir, tmp_path / "model"))
    for weights in model_dir.glob("*.safetensors"):
        weights.unlink()
    with open(model_dir / "pytorch_model.bin", "wb") as f:
        pickle.dump(_RunsOnUnpickling(marker), f, protocol=2)  # torch.save's protocol
    with pytest.raises(BackendLoadError, match="cannot load owlv2 model .*UnpicklingError: Weights only load failed"):
        create_backend("owlv2", {"model": "", "model_path": str(model_dir), "device": "cpu"})
    assert not marker.exists()
    # The same file does run code when unpickled without that guard: the test can fail.
    with open(model_dir / "pytorch_model.bin", "rb") as f:
        pickle.load(f).close()
    assert marker.exists()
