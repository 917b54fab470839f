import numpy as np
import pytest

from vlm_perception.backends import create_backend
from vlm_perception.core.errors import BackendLoadError


def test_plugin_class_gets_common_and_extra_options():
    backend = create_backend("plugin_backends:ColorBackend",
                             {"model": "m", "model_path": "", "device": "cpu", "precision": "auto",
                              "runtime": "torch", "delay_s": 0.5})
    assert backend.delay_s == 0.5
    assert backend.detect(np.zeros((4, 4, 3), np.uint8), ["apple"])[0].score < 0.5


def test_plugin_with_kwargs_gets_everything():
    assert create_backend("plugin_backends:BrokenBackend", {"model": "m", "anything": 1}) is not None


@pytest.mark.parametrize("name, options, message", [
    ("yolo", {}, "unknown backend 'yolo'; use one of owlv2, owlvit"),
    ("no_such_module:X", {}, "cannot import module 'no_such_module'"),
    ("plugin_backends:Missing", {}, "has no class 'Missing'"),
    ("plugin_backends:ColorBackend", {"colour": "red"}, "does not take option\\(s\\) colour"),
    ("plugin_backends:FailingToLoadBackend", {}, "failed to start: OSError: weights file is corrupt"),
    ("builtins:object", {}, "does not implement detect"),
])
def test_load_errors_say_what_to_fix(name, options, message):
    with pytest.raises(BackendLoadError, match=message):
        create_backend(name, options)


@pytest.mark.parametrize("extra_name", ["offline", "openvino"])
def test_extra_matches_its_requirements_file(extra_name):
    """setup.py's [offline] and [openvino] extras and requirements-<extra>.txt must name the same packages."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    tree = ast.parse((root / "vlm_perception" / "setup.py").read_text())
    [extra] = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", "") == f"{extra_name.upper()}_REQUIREMENTS"]
    listed = [line.strip() for line in (root / f"requirements-{extra_name}.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert extra == listed
