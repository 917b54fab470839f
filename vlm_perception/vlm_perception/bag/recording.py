"""What vlm_perception_replay --record writes: a rosbag2 (MCAP, zstd chunks) of replayed inputs and the node's outputs.

BagRecorder writes the bag; OutputRecorder finds the node's output topics on
the graph and subscribes them the way `ros2 bag record` adapts to their
publishers. Each topic stores the QoS its publishers offered
(offered_qos_profiles), so `ros2 bag play` and vlm_perception_replay latch
the latched ones again. See replay.py's docstring for what is recorded.
"""
from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import (Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from .bagfile import MSGS_PACKAGE, installed_msg_types, jazzy_typestore
from ..core.errors import ReplayError

# Deep enough that a burst of outputs waits while the recorder writes a chunk.
RECORD_DEPTH = 100
OUTPUT_TYPES = ("geometry_msgs/msg/PoseArray", "geometry_msgs/msg/PoseStamped")


def message_class(msgtype: str) -> Any:
    """The Python class of 'pkg/msg/Name', imported from `pkg.msg`."""
    package, _, name = msgtype.rpartition("/")
    try:
        return getattr(importlib.import_module(package.replace("/", ".")), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ReplayError(f"type {msgtype} has no Python message class here ({exc})") from exc


def bag_qos(profile: QoSProfile) -> Qos:
    """A publisher's QoS as rosbag2 records it in offered_qos_profiles."""
    def time(duration: Duration) -> QosTime:
        return QosTime(*divmod(duration.nanoseconds, 1_000_000_000))

    return Qos(QosHistory[profile.history.name], profile.depth, QosReliability[profile.reliability.name],
               QosDurability[profile.durability.name], time(profile.deadline), time(profile.lifespan),
               QosLiveliness[profile.liveliness.name], time(profile.liveliness_lease_duration),
               profile.avoid_ros_namespace_conventions)


def recording_typestore() -> Typestore:
    """rosbags' Jazzy types plus vlm_perception_msgs from its installed .msg files."""
    types = installed_msg_types()
    if types is None:
        raise ReplayError(f"{MSGS_PACKAGE} is not installed; build the workspace and source "
                          f"install/setup.bash before recording")
    return jazzy_typestore(types)


class BagRecorder:
    """The recorded bag; written from the player and from subscription callbacks, so locked."""

    def __init__(self, path: Path, typestore: Typestore) -> None:
        if path.exists():
            raise ReplayError(f"--record {path} exists already; choose a new directory")
        self._typestore = typestore
        writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        try:
            writer.open()
        except OSError as exc:
            raise ReplayError(f"cannot create --record {path}: {exc}; choose a writable directory") from exc
        self._writer: Optional[Writer] = writer
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()

    def add_topic(self, topic: str, msgtype: str, offered: list[Qos], msgdef: str = "", digest: str = "") -> None:
        """`offered`: the QoS of each publisher of the topic, stored as its offered_qos_profiles."""
        with self._lock:
            if topic in self._connections or self._writer is None:
                return
            writer = self._writer
            if msgdef and digest:
                self._connections[topic] = writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest,
                                                                 offered_qos_profiles=offered)
            elif msgtype in self._typestore.fielddefs:
                self._connections[topic] = writer.add_connection(topic, msgtype, typestore=self._typestore,
                                                                 offered_qos_profiles=offered)
            else:
                raise ReplayError(f"cannot record {topic}: no message definition of {msgtype} is known here; "
                                  f"leave it out of --record-topics")

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        with self._lock:
            if self._writer is not None:  # callbacks may still arrive while shutting down
                self._writer.write(self._connections[topic], timestamp_ns, data)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


class OutputRecorder:
    """Finds the recorded topics on the ROS graph and subscribes to them as they appear."""

    def __init__(self, node: Node, recorder: BagRecorder, namespace: str, topics: list[str],
                 exclude: set[str]) -> None:
        self._node = node
        self._recorder = recorder
        self._prefix = namespace.rstrip("/") + "/"
        self._wanted = set(topics)
        self._exclude = exclude
        self._subscriptions: dict[str, Any] = {}

    def _wanted_topic(self, topic: str, msgtype: str) -> bool:
        if topic in self._subscriptions or topic in self._exclude:
            return False
        if self._wanted:
            return topic in self._wanted
        return topic.startswith(self._prefix) and (
            msgtype.startswith(f"{MSGS_PACKAGE}/msg/") or msgtype in OUTPUT_TYPES)

    def scan(self) -> None:
        for topic, types in self._node.get_topic_names_and_types():
            if not self._wanted_topic(topic, types[0]):
                continue
            try:
                cls = message_class(types[0])
            except ReplayError as exc:
                raise ReplayError(f"cannot record {topic}: {exc}; install and source the package that "
                                  f"defines it, or name the topics to record with --record-topics") from exc
            offers = [info.qos_profile for info in self._node.get_publishers_info_by_topic(topic)]
            self._recorder.add_topic(topic, types[0], [bag_qos(offer) for offer in offers])
            self._subscriptions[topic] = self._node.create_subscription(
                cls, topic, self._writer_for(topic), _request_qos(offers), raw=True)

    def _writer_for(self, topic: str) -> Callable[[bytes], None]:
        return lambda data: self._recorder.write(topic, time.time_ns(), data)

    def ready(self) -> bool:
        """Every recorded topic found (at least one when discovering) and matched to its publishers."""
        found = set(self._subscriptions)
        complete = self._wanted <= found if self._wanted else bool(found)
        return complete and all(sub.get_publisher_count() > 0 for sub in self._subscriptions.values())

    def missing(self) -> list[str]:
        return sorted(self._wanted - set(self._subscriptions))


def _request_qos(offers: list[QoSProfile]) -> QoSProfile:
    """The subscription that matches every offer and gets the most, as `ros2 bag record` adapts."""
    # A reliable subscription loses nothing but matches only reliable publishers; a TRANSIENT_LOCAL
    # one gets latched messages but matches only TRANSIENT_LOCAL publishers.
    best_effort = any(offer.reliability == ReliabilityPolicy.BEST_EFFORT for offer in offers)
    latched_offers = bool(offers) and all(offer.durability == DurabilityPolicy.TRANSIENT_LOCAL for offer in offers)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched_offers else DurabilityPolicy.VOLATILE)
