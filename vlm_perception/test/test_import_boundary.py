"""The ROS-free core and the backends never import rclpy or ROS message packages.

Each module is imported in a fresh interpreter whose import system refuses ROS
packages, so an indirect import (core -> helper -> rclpy) fails too.
"""

import pkgutil
import subprocess
import sys

import pytest

import vlm_perception.backends
import vlm_perception.core

ROS_PACKAGES = (
    "rclpy",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "diagnostic_msgs",
    "builtin_interfaces",
    "vision_msgs",
    "vlm_perception_msgs",
    "tf2_ros",
    "cv_bridge",
)

BLOCKER = f"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ROS_PACKAGES!r}:
            raise ImportError("ROS package imported from the ROS-free part: " + name)
        return None
sys.meta_path.insert(0, Refuse())
"""


def ros_free_modules() -> list[str]:
    names = []
    for package in (vlm_perception.core, vlm_perception.backends):
        names.append(package.__name__)
        names += [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
    return names


@pytest.mark.parametrize("module", ros_free_modules())
def test_module_imports_without_ros(module: str) -> None:
    code = BLOCKER + f"import {module}\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{module} pulls in ROS:\n{done.stderr[-2000:]}"


def test_blocker_catches_a_ros_import() -> None:
    """The check itself works: a ROS-shell module is refused."""
    code = BLOCKER + "import vlm_perception.ros.node\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "ROS package imported" in done.stderr
