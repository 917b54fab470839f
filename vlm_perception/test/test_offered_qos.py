"""A bag's recorded offered_qos_profiles read down to replay's latch-or-not decision, in every form rosbag2 wrote."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from mcap.writer import Writer as McapWriter
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9
from rosbags.typesys import Stores, get_typestore

from vlm_perception.bag.bagfile import BagReader
from vlm_perception.bag.offered_qos import latched, offered_durabilities

INFINITE = QosTime(9223372036, 854775807)  # RMW_DURATION_INFINITE, as rosbag2 records it from the graph


def offer(durability: QosDurability) -> Qos:
    return Qos(QosHistory.UNKNOWN, 0, QosReliability.RELIABLE, durability, INFINITE, INFINITE,
               QosLiveliness.AUTOMATIC, INFINITE, False)


STATIC_BROADCASTERS = [offer(QosDurability.TRANSIENT_LOCAL), offer(QosDurability.TRANSIENT_LOCAL)]
MIXED = [offer(QosDurability.TRANSIENT_LOCAL), offer(QosDurability.VOLATILE)]

# As rosbag2 (Jazzy) writes it into MCAP channel metadata and the sqlite3 topics table.
JAZZY_YAML = """- history: unknown
  depth: 0
  reliability: reliable
  durability: transient_local
  deadline:
    sec: 9223372036
    nsec: 854775807
  lifespan:
    sec: 9223372036
    nsec: 854775807
  liveliness: automatic
  liveliness_lease_duration:
    sec: 9223372036
    nsec: 854775807
  avoid_ros_namespace_conventions: false
"""


def test_rosbag2_yaml_list_forms_give_each_publishers_durability():
    assert offered_durabilities(JAZZY_YAML) == ("transient_local",)
    # metadata.yaml version 9: a YAML list of policy names; version 8 and before: a YAML string of numbers
    assert offered_durabilities(dump_qos_v9(MIXED)) == ("transient_local", "volatile")
    assert "durability: 1" in dump_qos_v8(MIXED)
    assert offered_durabilities(dump_qos_v8(MIXED)) == ("transient_local", "volatile")
    # rosbags' parsed profiles (what its readers put in Connection.ext.offered_qos_profiles)
    assert offered_durabilities(STATIC_BROADCASTERS) == ("transient_local", "transient_local")


def test_latched_when_every_recorded_publisher_offered_transient_local():
    tf = "tf2_msgs/msg/TFMessage"
    assert latched("/tf_static", tf, offered_durabilities(STATIC_BROADCASTERS))
    assert not latched("/tf_static", tf, offered_durabilities(MIXED))  # as ros2 bag play: volatile matches all
    assert latched("/map", "nav_msgs/msg/OccupancyGrid", offered_durabilities([offer(QosDurability.TRANSIENT_LOCAL)]))
    assert not latched("/image", "sensor_msgs/msg/Image", offered_durabilities([offer(QosDurability.VOLATILE)]))
    assert not latched("/image", "sensor_msgs/msg/Image", ("system_default",))


@pytest.mark.parametrize("nothing", [None, "", [], "\n"])
def test_without_recorded_offers_only_tf_static_is_latched(nothing):
    durabilities = offered_durabilities(nothing)
    assert durabilities == ()
    assert latched("/tf_static", "tf2_msgs/msg/TFMessage", durabilities)
    assert latched("/robot/tf_static", "tf2_msgs/msg/TFMessage", durabilities)
    assert not latched("/tf", "tf2_msgs/msg/TFMessage", durabilities)
    assert not latched("/tf_static", "std_msgs/msg/String", durabilities)
    assert not latched("/map", "nav_msgs/msg/OccupancyGrid", durabilities)


@pytest.mark.parametrize("text, says", [
    ("[: bad", "not YAML"),
    ("durability: transient_local", "not a list"),
    ("- depth: 1", "without a durability"),
    ("- durability: 7", "without a durability"),
    ("- 3", "without a durability"),
    (42, "not a list"),
])
def test_malformed_offers_raise_a_value_error_that_says_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says):
        offered_durabilities(text)


# --- read from bags ------------------------------------------------------------------------


def write_bag(path: Path, storage: StoragePlugin) -> Path:
    """/tf_static from two static broadcasters and a volatile topic, as `ros2 bag record` stores them."""
    store = get_typestore(Stores.ROS2_JAZZY)
    string = store.types["std_msgs/msg/String"]
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=storage) as writer:
        tf = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=store,
                                   offered_qos_profiles=STATIC_BROADCASTERS)
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store,
                                        offered_qos_profiles=[offer(QosDurability.VOLATILE)])
        writer.write(tf, 1, store.serialize_cdr(store.types["tf2_msgs/msg/TFMessage"](transforms=[]),
                                                "tf2_msgs/msg/TFMessage"))
        for index in range(300):  # 2.4 MB, more than two of rosbags' 1 MiB MCAP chunks: a cut keeps the first
            text = np.random.default_rng(index).integers(0, 256, 4000, np.uint8).tobytes().hex()
            writer.write(chatter, 2 + index, store.serialize_cdr(string(data=text), "std_msgs/msg/String"))
    return path


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_bag_reader_gives_each_topics_offers_also_when_it_scans_a_cut_bag(storage, tmp_path):
    bag = write_bag(tmp_path / "bag", storage)
    expected = {"/tf_static": ("transient_local", "transient_local"), "/chatter": ("volatile",)}
    with BagReader(bag) as reader:
        assert {t.name: t.durabilities for t in reader.topics.values()} == expected
    storage_file, = [f for f in bag.iterdir() if f.suffix in (".mcap", ".db3")]
    os.truncate(storage_file, storage_file.stat().st_size // 2)
    with BagReader(bag) as reader:
        assert reader.index_problem  # scanned: the offers come from the MCAP channels / sqlite3 topics table
        assert {t.name: t.durabilities for t in reader.topics.values()} == expected


def write_mcap_with_offers(path: Path, offered: str) -> Path:
    string = get_typestore(Stores.ROS2_JAZZY).generate_msgdef("std_msgs/msg/String", ros_version=2)[0]
    with path.open("wb") as stream:
        writer = McapWriter(stream)
        writer.start("ros2", "test")
        channel = writer.register_channel("/tf_static", "cdr", writer.register_schema(
            "std_msgs/msg/String", "ros2msg", string.encode()), metadata={"offered_qos_profiles": offered})
        writer.add_message(channel, log_time=1, publish_time=1, data=bytes([0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]))
        writer.finish()
    return path


def test_bag_with_unreadable_offers_is_read_with_a_clear_problem_and_no_crash(tmp_path):
    # rosbags raises KeyError on a profile without all policies: the bag is scanned, its durability read.
    with BagReader(write_mcap_with_offers(tmp_path / "partial.mcap", "- {durability: transient_local}")) as reader:
        assert "no 'depth'" in reader.index_problem
        assert reader.topics["/tf_static"].durabilities == ("transient_local",)
    with BagReader(write_mcap_with_offers(tmp_path / "broken.mcap", "[: not yaml")) as reader:
        topic = reader.topics["/tf_static"]
        assert topic.durabilities == () and "offered_qos_profiles is not YAML" in topic.qos_problem
        assert [msg.topic for msg in reader.messages(["/tf_static"])] == ["/tf_static"]
