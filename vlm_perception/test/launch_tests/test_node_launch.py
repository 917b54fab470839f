"""Start the node from its launch file and call the service.

Run by test_launch_tests.py with the `launch_test` runner (launch, launch_ros and
launch_testing come from a ROS 2 install or the .ros2-tools overlay); test_launch_files.py
also checks the launch files statically.
"""
from __future__ import annotations

import unittest

import launch
import launch_testing.actions
import rclpy
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_support import COLOR_BACKEND, node_launch_file
from vlm_perception_msgs.srv import QueryScene


def generate_test_description():
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(node_launch_file()),
            launch_arguments={"backend": COLOR_BACKEND, "namespace": "launch_test"}.items()),
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
