"""The node launch file included by a robot's bringup: a pushed namespace, camera topics
remapped through launch arguments and through SetRemap, and the lifecycle driven by launch
events (what a launch-based bringup does instead of autostart).

Run by test_launch_tests.py with the `launch_test` runner.
"""
from __future__ import annotations

import time
import unittest

import launch
import launch_testing.actions
import rclpy
from launch.actions import EmitEvent, GroupAction, IncludeLaunchDescription, RegisterEventHandler
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.actions import PushRosNamespace, SetRemap
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.events.matchers import matches_node_name
from launch_support import COLOR_BACKEND, apple_frame, node_launch_file
from lifecycle_msgs.msg import Transition
from rclpy.qos import qos_profile_sensor_data
from ros_harness import TestClient, now_stamp, wait_until
from sensor_msgs.msg import CameraInfo, Image

from vlm_perception.core.images import encode_image_fields

ROBOT = "robot1"
NODE = f"/{ROBOT}/vlm_perception"
# Relative remaps resolve inside the pushed namespace: /robot1/front_camera/...
# image and depth go in as launch arguments, camera_info through the group's SetRemap.
CAMERA = {
    "image": "front_camera/color/image_raw",
    "depth": "front_camera/aligned_depth_to_color/image_raw",
    "camera_info": "front_camera/color/camera_info",
}


def transition(transition_id: int) -> EmitEvent:
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_node_name(NODE), transition_id=transition_id))


def generate_test_description():
    bringup = GroupAction([
        PushRosNamespace(ROBOT),
        SetRemap(src="camera_info", dst=CAMERA["camera_info"]),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(node_launch_file()),
            launch_arguments={"backend": COLOR_BACKEND, "autostart": "false",
                              "image": CAMERA["image"], "depth": CAMERA["depth"]}.items()),
    ])
    return launch.LaunchDescription([
        bringup,
        # configure now, activate once configured: the launch file's LifecycleNode reports its transitions
        RegisterEventHandler(OnStateTransition(goal_state="inactive",
                                               entities=[transition(Transition.TRANSITION_ACTIVATE)])),
        transition(Transition.TRANSITION_CONFIGURE),
        launch_testing.actions.ReadyToTest(),
    ])


class TestIncludedWithNamespaceAndRemaps(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.client = TestClient(NODE)  # publishes "image" etc. in /robot1: not the topics the node reads
        cls.camera = cls.client.node.create_publisher(Image, f"/{ROBOT}/{CAMERA['image']}", qos_profile_sensor_data)
        # image_qos auto subscribes an input once it has a publisher: the driver's depth and camera_info too.
        cls.depth = cls.client.node.create_publisher(Image, f"/{ROBOT}/{CAMERA['depth']}", qos_profile_sensor_data)
        cls.info = cls.client.node.create_publisher(CameraInfo, f"/{ROBOT}/{CAMERA['camera_info']}", 10)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        rclpy.shutdown()

    def test_node_reads_the_remapped_topics_in_its_namespace(self):
        self.assertTrue(self.client.wait_for_service(60.0))
        self.client.handshake()
        self.assertTrue(wait_until(lambda: self.client.lifecycle_state() == "active", 60.0, period=0.5))
        node = self.client.node
        for name, topic in CAMERA.items():
            self.assertTrue(wait_until(lambda: node.count_subscribers(f"/{ROBOT}/{topic}") > 0, 10.0),
                            f"nothing subscribes /{ROBOT}/{topic} ({name})")
            self.assertEqual(node.count_subscribers(f"/{ROBOT}/{name}"), 0, f"/{ROBOT}/{name} is not remapped")
        frame = Image(**encode_image_fields(apple_frame(), "rgb8"))
        for _ in range(50):  # best effort may lose the first frames
            frame.header.stamp = now_stamp(self.client)
            self.camera.publish(frame)
            time.sleep(0.1)
            response = self.client.query("apple")
            if response.success:
                break
        self.assertTrue(response.success, response.message)
        self.assertTrue(response.presence[0].present)
