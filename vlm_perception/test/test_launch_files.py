"""The launch files checked without `launch` (not on PyPI): what they start must exist.

On a ROS 2 install, test_launch_node.py also starts the node from the launch file.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory

from vlm_perception.ros.node_params import PARAMS

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"
DECLARED = {spec.name for spec in PARAMS} | {"use_sim_time"}  # rclpy declares use_sim_time itself


def constants(launch_file: str) -> dict:
    """Module-level constant assignments of a launch file, read without importing it."""
    tree = ast.parse((LAUNCH_DIR / launch_file).read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def installed_executable(name: str) -> Path:
    return Path(get_package_prefix("vlm_perception")) / "lib" / "vlm_perception" / name


def test_node_launch_starts_an_installed_executable_with_declared_parameters():
    c = constants("vlm_perception.launch.py")
    assert installed_executable(c["EXECUTABLE"]).is_file()
    assert set(c["PARAMETER_ARGUMENTS"]) <= DECLARED
    assert set(c["BOOL_ARGUMENTS"]) <= DECLARED
    assert "autostart" in c["BOOL_ARGUMENTS"]  # the launch argument that activates the lifecycle node


def test_node_launch_config_is_installed_and_only_sets_declared_parameters():
    config = Path(get_package_share_directory("vlm_perception")) / "config" / constants(
        "vlm_perception.launch.py")["CONFIG_FILE"]
    assert config.is_file()
    [(_, section)] = yaml.safe_load(config.read_text()).items()
    assert set(section["ros__parameters"]) <= DECLARED


@pytest.mark.parametrize("launch_file", ["vlm_perception.launch.py", "replay.launch.py"])
def test_launch_files_are_installed(launch_file):
    assert (Path(get_package_share_directory("vlm_perception")) / "launch" / launch_file).is_file()


def test_replay_launch_runs_the_installed_replay_tool():
    assert installed_executable(constants("replay.launch.py")["REPLAY_EXECUTABLE"]).is_file()
