"""Start vlm_perception_node with its parameter file (needs a ROS 2 install: launch, launch_ros).

    ros2 launch vlm_perception vlm_perception.launch.py image:=/camera/color/image_raw \
        depth:=/camera/aligned_depth_to_color/image_raw camera_info:=/camera/color/camera_info \
        model_path:=/models/owlv2 namespace:=robot1 use_sim_time:=false autostart:=true

backend, model and model_path override the parameter file only when given.
autostart:=false leaves the lifecycle node unconfigured for a lifecycle manager
(or `ros2 lifecycle set /vlm_perception configure`, then `activate`). The node is
started as a launch_ros LifecycleNode, so an including launch file can also drive it
with launch_ros.events.lifecycle.ChangeState events and react to its state changes.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = "vlm_perception"
EXECUTABLE = "vlm_perception_node"
NODE_NAME = "vlm_perception"
CONFIG_FILE = "vlm_perception.yaml"
# Launch arguments that become node parameters when not empty.
PARAMETER_ARGUMENTS = ("backend", "model", "model_path")
# Launch arguments that become boolean node parameters.
BOOL_ARGUMENTS = ("use_sim_time", "autostart")
# Launch arguments that remap the node's relative input topics.
TOPIC_ARGUMENTS = ("image", "depth", "camera_info")


def _node(context: LaunchContext) -> list[LifecycleNode]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {name: arg(name) for name in PARAMETER_ARGUMENTS if arg(name)}
    for flag in BOOL_ARGUMENTS:
        overrides[flag] = arg(flag).lower() in ("true", "1", "yes")
    remappings = [(topic, arg(topic)) for topic in TOPIC_ARGUMENTS]
    remappings.append(("image/compressed", arg("image") + "/compressed"))
    return [LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=arg("namespace"),
        parameters=[arg("config"), overrides],
        remappings=remappings,
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    config = os.path.join(get_package_share_directory(PACKAGE), "config", CONFIG_FILE)
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=config, description="parameter YAML file"),
        *(DeclareLaunchArgument(name, default_value="", description=f"overrides the `{name}` parameter")
          for name in PARAMETER_ARGUMENTS),
        *(DeclareLaunchArgument(name, default_value=name, description=f"topic to use as `{name}`")
          for name in TOPIC_ARGUMENTS),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate the lifecycle node at start-up"),
        OpaqueFunction(function=_node),
    ])
