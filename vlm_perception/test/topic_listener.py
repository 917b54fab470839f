"""A subscriber in its own process, for replay QoS tests: it may start after the replay has published.

    python topic_listener.py TOPIC:TYPE:DURABILITY ...

Subscribes each TOPIC (reliable, the given durability: volatile or transient_local),
prints "subscribed" once all exist, then one line per message: the topic and what
identifies the message (child frame ids of a tf2_msgs/msg/TFMessage, else the
header stamp's seconds), until SIGINT or SIGTERM.
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions


def describe(msg: Any) -> str:
    if hasattr(msg, "transforms"):
        return ",".join(t.child_frame_id for t in msg.transforms)
    return str(msg.header.stamp.sec)


def main(specs: list[str]) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("topic_listener")
    lock = threading.Lock()

    def printer(topic: str) -> Any:
        def callback(msg: Any) -> None:
            with lock:
                print(f"{topic} {describe(msg)}", flush=True)
        return callback

    for spec in specs:
        topic, msgtype, durability = spec.split(":")
        package, _, name = msgtype.rpartition("/")
        cls = getattr(importlib.import_module(package.replace("/", ".")), name)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy[durability.upper()])
        node.create_subscription(cls, topic, printer(topic), qos)
    print("subscribed", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
