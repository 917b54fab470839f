"""Play a rosbag2 through vlm_perception_node on bag time (needs a ROS 2 install).

    ros2 launch vlm_perception replay.launch.py bag:=/path/to/bag [record:=/path/to/out] [lockstep:=true]
    ros2 launch vlm_perception replay.launch.py bag:=/path/to/bag player:=ros2_bag

player:=vlm_perception (default) uses the package's own replay tool, which
can also record the node's outputs and, with lockstep:=true, publish each
camera frame only once the node has answered the one before (every frame
evaluated, whatever the model's speed); player:=ros2_bag uses `ros2 bag play`.
Topic arguments default to the sample bag's topics (vlm_perception_sample_bag).
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = "vlm_perception"
REPLAY_EXECUTABLE = "vlm_perception_replay"
SAMPLE_TOPICS = {
    "image": "/camera/color/image_raw",
    "depth": "/camera/depth/image_raw",
    "camera_info": "/camera/color/camera_info",
}


def _player(context: LaunchContext) -> list[ExecuteProcess]:
    bag = LaunchConfiguration("bag").perform(context)
    rate = LaunchConfiguration("rate").perform(context)
    if LaunchConfiguration("player").perform(context) == "ros2_bag":
        command = ["ros2", "bag", "play", bag, "--clock", "--rate", rate]
    else:
        executable = os.path.join(get_package_prefix(PACKAGE), "lib", PACKAGE, REPLAY_EXECUTABLE)
        command = [executable, bag, "--rate", rate]
        record = LaunchConfiguration("record").perform(context)
        if record:
            command += ["--record", record]
        if LaunchConfiguration("lockstep").perform(context) == "true":
            command += ["--lockstep", "--start-delay", "120"]  # the node may still be loading its model
    return [ExecuteProcess(cmd=command, output="screen")]


def generate_launch_description() -> LaunchDescription:
    node_launch = os.path.join(get_package_share_directory(PACKAGE), "launch", "vlm_perception.launch.py")
    topics = {name: LaunchConfiguration(name) for name in SAMPLE_TOPICS}
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory (MCAP or sqlite3)"),
        DeclareLaunchArgument("player", default_value="vlm_perception", choices=["vlm_perception", "ros2_bag"],
                              description="replay tool"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("record", default_value="",
                              description="record the node's outputs into this new bag (player vlm_perception)"),
        DeclareLaunchArgument("lockstep", default_value="false", choices=["true", "false"],
                              description="one frame at a time, each once the node has answered (player "
                                          "vlm_perception)"),
        *(DeclareLaunchArgument(name, default_value=topic, description=f"bag topic to use as `{name}`")
          for name, topic in SAMPLE_TOPICS.items()),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(node_launch),
            launch_arguments={"use_sim_time": "true", **topics}.items(),
        ),
        OpaqueFunction(function=_player),
    ])
