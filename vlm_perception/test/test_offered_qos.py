"""A bag's recorded offered_qos_profiles read down to replay's latch-or-not decision, in every form rosbag2 wrote."""
from __future__ import annotations

import pytest
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9

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
