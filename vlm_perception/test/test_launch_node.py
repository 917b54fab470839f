"""Start the node from its launch file and call the service (needs a ROS 2 install).

launch, launch_ros and launch_testing are not on PyPI: without them this file
is skipped, and test_launch_files.py checks the launch files statically.
"""
from __future__ import annotations

import os
import unittest

import pytest

launch_testing = pytest.importorskip("launch_testing", reason="launch_testing needs a ROS 2 install")
launch_ros = pytest.importorskip("launch_ros", reason="launch_ros needs a ROS 2 install")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from vlm_perception_msgs.srv import QueryScene  # noqa: E402

TEST_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.launch_test
def generate_test_description():
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TEST_DIR, os.environ.get("PYTHONPATH")]))
    node_launch = os.path.join(get_package_share_directory("vlm_perception"), "launch", "vlm_perception.launch.py")
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(node_launch),
            launch_arguments={"backend": "plugin_backends:ColorBackend", "namespace": "launch_test"}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestServiceAnswers(unittest.TestCase):
    def test_query_is_answered(self):
        rclpy.init()
        node = rclpy.create_node("launch_test_client")
        try:
            client = node.create_client(QueryScene, "/launch_test/vlm_perception/query")
            self.assertTrue(client.wait_for_service(timeout_sec=60.0))
            future = client.call_async(QueryScene.Request(query="apple"))
            rclpy.spin_until_future_complete(node, future, timeout_sec=30.0)
            # No camera frame is published here: the node must answer, and say so.
            self.assertFalse(future.result().success)
            self.assertIn("no frame received", future.result().message)
        finally:
            node.destroy_node()
            rclpy.shutdown()
