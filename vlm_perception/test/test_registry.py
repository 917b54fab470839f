import numpy as np
import pytest
from plugin_backends import ColorBackend, install_plugin

from vlm_perception.backends import create_backend
from vlm_perception.backends.registry import installed_plugins
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
    (":ColorBackend", {}, "is not 'package.module:ClassName'"),
    (".plugin_backends:ColorBackend", {}, "is not 'package.module:ClassName'"),
    ("plugin_backends:", {}, "is not 'package.module:ClassName'"),
])
def test_load_errors_say_what_to_fix(name, options, message):
    with pytest.raises(BackendLoadError, match=message):
        create_backend(name, options)


def test_an_installed_plugin_is_found_by_its_entry_point_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install_plugin(tmp_path, "color_plugin")))
    assert "color_plugin" in installed_plugins()
    backend = create_backend("color_plugin", {"model": "", "model_path": "", "device": "cpu", "delay_s": 0.5})
    assert isinstance(backend, ColorBackend) and backend.delay_s == 0.5


def test_unknown_names_list_the_installed_plugins(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install_plugin(tmp_path, "color_plugin")))
    with pytest.raises(BackendLoadError, match=r"an installed plugin \(color_plugin\)"):
        create_backend("colour_plugin", {})


def test_a_plugin_that_cannot_be_imported_says_which_and_why(tmp_path, monkeypatch):
    site = install_plugin(tmp_path, "broken_plugin")
    (site / "broken_plugin.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(BackendLoadError, match="cannot load plugin 'broken_plugin' \\(broken_plugin:ColorPlugin, "
                                               "entry-point group vlm_perception.backends\\): ModuleNotFoundError"):
        create_backend("broken_plugin", {})


@pytest.mark.parametrize("options, where", [
    ({"trust_remote_code": True}, "backend_options: trust_remote_code"),
    ({"trust_remote_code": "false"}, "backend_options: trust_remote_code"),  # a string is truthy to transformers
    ({"model_kwargs": {"trust_remote_code": 1}}, "backend_options.model_kwargs: trust_remote_code"),
    ({"loaders": [{"trust_remote_code": True}]}, "backend_options.loaders\\[0\\]: trust_remote_code"),
])
def test_trust_remote_code_is_refused_with_the_reason(options, where):
    # BrokenBackend takes any option: the refusal is the registry's, before anything is imported.
    with pytest.raises(BackendLoadError, match=f"{where} is refused: it lets transformers import and run"):
        create_backend("plugin_backends:BrokenBackend", options)


def test_trust_remote_code_false_is_harmless_and_accepted():
    assert create_backend("plugin_backends:BrokenBackend", {"trust_remote_code": False}) is not None


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
