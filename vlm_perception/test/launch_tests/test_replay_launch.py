"""replay.launch.py replays the sample bag into the node on bag time; the recording holds the node's outputs.

Run by test_launch_tests.py with the `launch_test` runner.
"""
from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import launch
import launch_testing.actions
from ament_index_python.packages import get_package_share_directory
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_support import COLOR_BACKEND
from rosbags.highlevel import AnyReader
from ros_harness import wait_until

from vlm_perception.bag.sample_bag import load_ground_truth, write_sample_bag
from vlm_perception.core.frames import stamp_to_ns

WORK = Path(tempfile.mkdtemp(prefix="vlm-replay-launch-"))
BAG = WORK / "sample"
RECORD = WORK / "run"
SECONDS = 3.0
PRESENCE = "/vlm_perception/presence"


def generate_test_description():
    write_sample_bag(BAG, seconds=SECONDS, scene="shapes")  # ColorBackend sees the shapes
    replay_launch = os.path.join(get_package_share_directory("vlm_perception"), "launch", "replay.launch.py")
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(replay_launch),
            # backend reaches the included node launch file as a launch configuration
            launch_arguments={"bag": str(BAG), "record": str(RECORD), "backend": COLOR_BACKEND}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestReplayRecordsOutputs(unittest.TestCase):
    def test_recording_holds_presence_for_the_replayed_frames(self):
        # The replay tool closes the recording (metadata.yaml) when the bag has been played.
        self.assertTrue(wait_until(lambda: (RECORD / "metadata.yaml").is_file(), 120.0, period=0.5),
                        f"no finished recording in {RECORD}")
        presence = []
        with AnyReader([RECORD]) as reader:
            topics = {conn.topic for conn in reader.connections}
            self.assertIn("/camera/color/image_raw", topics)
            for conn, _, data in reader.messages(connections=[c for c in reader.connections if c.topic == PRESENCE]):
                presence.append(reader.deserialize(data, conn.msgtype))
        self.assertGreater(len(presence), 0, f"no {PRESENCE} in the recording; topics: {sorted(topics)}")
        # Each output answers for a replayed frame (its stamp) as the bag's ground truth says.
        truth = {f["stamp_ns"]: f["objects"] for f in load_ground_truth(BAG)["frames"]}
        for msg in presence:
            objects = truth[stamp_to_ns(msg.header.stamp)]
            self.assertEqual({r.query: r.present for r in msg.results},
                             {r.query: objects[r.query]["present"] for r in msg.results})
            self.assertEqual([r.query for r in msg.results], ["apple", "banana"])  # the config's standing queries
