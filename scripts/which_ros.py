"""Print which ROS 2 distribution this environment runs, and where launch/ros2cli come from.

`make test` prints it first, so each CI leg's log names its distribution.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re


def wheel_distribution() -> str | None:
    """'jazzy' for rclpy from a ros-jazzy-rclpy wheel; None for a ROS 2 install."""
    for dist in importlib.metadata.distributions():
        match = re.fullmatch(r"ros-([a-z]+)-rclpy", dist.metadata["Name"] or "")
        if match:
            return f"{match.group(1)} (PyPI wheels, rclpy {importlib.metadata.version('ros-rclpy')})"
    return None


def main() -> None:
    distribution = wheel_distribution() or f"{os.environ.get('ROS_DISTRO', 'unknown')} (ROS 2 install)"
    launch = importlib.util.find_spec("launch_testing")
    tools = os.path.dirname(os.path.dirname(launch.origin)) if launch and launch.origin else "absent"
    print(f"ROS 2 distribution: {distribution}; launch_testing/ros2cli: {tools}")


if __name__ == "__main__":
    main()
