"""autostart:=false: the node waits unconfigured until `ros2 lifecycle set` brings it up.

Run by test_launch_tests.py with the `launch_test` runner.
"""
from __future__ import annotations

import time
import unittest

import launch
import launch_testing.actions
import rclpy
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_support import COLOR_BACKEND, apple_frame, node_launch_file
from ros2_cli import run
from ros_harness import TestClient, wait_answerable

NAMESPACE = "lifecycle_launch"
NODE = f"/{NAMESPACE}/vlm_perception"


def generate_test_description():
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(node_launch_file()),
            launch_arguments={"backend": COLOR_BACKEND, "namespace": NAMESPACE, "autostart": "false"}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


def lifecycle_set(transition: str, timeout: float = 60.0) -> str:
    """`ros2 lifecycle set NODE TRANSITION`; retried while the CLI's own discovery has not seen the node."""
    deadline = time.monotonic() + timeout
    while True:
        result = run(["ros2", "lifecycle", "set", "--no-daemon", NODE, transition])
        output = result.stdout + result.stderr
        if "Node not found" not in output or time.monotonic() > deadline:
            return output
        time.sleep(0.5)


class TestLifecycleSet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.client = TestClient(NODE)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        rclpy.shutdown()

    def test_unconfigured_until_ros2_lifecycle_set(self):
        self.assertTrue(self.client.wait_for_service(60.0))
        self.client.handshake()
        self.assertEqual(self.client.lifecycle_state(), "unconfigured")
        response = self.client.query("apple")
        self.assertFalse(response.success)
        self.assertIn("not active", response.message)
        for transition, state in (("configure", "inactive"), ("activate", "active")):
            output = lifecycle_set(transition)
            self.assertIn("Transitioning successful", output)
            self.assertEqual(self.client.lifecycle_state(), state)
        wait_answerable(self.client, apple_frame())
        [apple] = self.client.query("apple").presence
        self.assertTrue(apple.present)
