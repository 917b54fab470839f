"""What the launch tests share: the installed node launch file and a painted camera frame.

Launch tests run under the `launch_test` runner (test_launch_tests.py starts it with
the test folder on PYTHONPATH, so ros_harness and plugin_backends import here too).
"""
from __future__ import annotations

import os

import numpy as np
from ament_index_python.packages import get_package_share_directory
from plugin_backends import paint

COLOR_BACKEND = "plugin_backends:ColorBackend"


def node_launch_file() -> str:
    return os.path.join(get_package_share_directory("vlm_perception"), "launch", "vlm_perception.launch.py")


def apple_frame() -> np.ndarray:
    """An RGB frame holding one apple-coloured block that ColorBackend finds."""
    return paint(np.zeros((120, 160, 3), np.uint8), "apple", (40, 30, 80, 70))
