"""vlm_perception_replay: play a rosbag2 into ROS 2 with its timing, and record what the node answers.

    vlm_perception_replay BAG [--rate 1.0] [--loop] [--topics T ...] [--remap FROM:=TO ...]
        [--clock | --no-clock] [--start-delay S] [--progress]
        [--lockstep] [--frame-timeout S] [--frame-topic T]
        [--record OUT] [--record-topics T ...] [--record-namespace NS] [--record-tail S]

Messages go out as recorded (raw CDR, no deserialisation) with the bag's
timing divided by --rate, each topic through a reliable KEEP_LAST(100)
publisher, which both best-effort and reliable subscribers accept; a
reliable subscriber misses a message only if it falls 100 messages behind.
A topic whose recorded publishers all offered TRANSIENT_LOCAL (the bag's
offered_qos_profiles; /tf_static of a bag that recorded no QoS) is replayed
TRANSIENT_LOCAL with every message of the bag in its history (images: the
last 100), so a subscriber that starts later still gets them all, e.g. each
static broadcaster's transforms; the others are VOLATILE, as `ros2 bag play`.
After the last message the tool waits (up to 5 s) until reliable subscribers
have acknowledged every message, as `ros2 bag play --wait-for-all-acked`
does: large frames still in flight would be lost when it exits. The tool
loads the package's large-image Fast DDS profile, so raw HD frames fit in
shared memory, unless FASTRTPS_/FASTDDS_DEFAULT_PROFILES_FILE is set. /clock
(rosgraph_msgs/Clock) follows the bag time, at every message and at 40 Hz
in between (as `ros2 bag play --clock`), so a node with use_sim_time runs on bag time. Before the first
message the tool waits, up to --start-delay seconds, until every replayed
topic has a subscriber (and every recorded topic a publisher): DDS drops
what is published before a subscriber is matched.

--lockstep replays one camera frame at a time, whatever the model's speed:
after each message on the camera topic (--frame-topic; default the one
image topic named *color*, or the only one) it waits until the node has
published its ~/presence output for that frame, matched by header stamp
and frame_id, or --frame-timeout seconds (default 30; each timeout is one
line on stderr), then goes on with the next message. --rate is ignored;
/clock steps with the bag, so a node on use_sim_time sees each frame at
its own time. The node runs as configured: its latched ~/standing_queries
(found under --record-namespace) say which output is the frame's answer,
so service calls on the same frame do not release it.

--record OUT writes a new rosbag2 (MCAP, zstd chunks) holding
- every replayed message, under the name it was published as (after
  --remap), stamped with the wall-clock time it was published;
- every message on the recorded topics, stamped with the wall-clock time it
  was received, subscribed TRANSIENT_LOCAL where every publisher offers it
  (so latched outputs such as ~/standing_queries are recorded too). By
  default these are the topics under --record-namespace (default: all)
  whose type is vlm_perception_msgs/msg/* or geometry_msgs/msg/PoseArray or
  PoseStamped, e.g. /ns/vlm_perception/presence, grasp_targets, grasp_poses,
  grasp_pose; --record-topics names them instead.
Each topic stores the QoS its publishers offered (offered_qos_profiles, as
rosbag2 records it; for the replayed inputs, the replay's own), so
`ros2 bag play` and this tool latch the latched ones again. Both use one
clock, so inputs and outputs line up; the node copies each input header into
its outputs, so outputs match frames by header stamp.
Message definitions are stored in the bag (vlm_perception_msgs from the
installed .msg files), so rosbags' AnyReader reads it without this package.
After the last message the tool keeps recording for --record-tail seconds.

Exit status: 0 done, or stopped with Ctrl-C (SIGINT, or SIGTERM; the
recorded bag is closed and readable); 1 a ReplayError: one line on stderr saying what to
fix (a damaged bag is first replayed as far as it can be read); 2 bad
arguments.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, TextIO

import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_namespace import validate_namespace
from rosgraph_msgs.msg import Clock

from .cli_args import non_negative, positive
from .bagfile import BagMessage, BagReader, BagTopic
from .lockstep import IMAGE_TYPES, Lockstep, OutputGate, frame_topic
from .offered_qos import latched
from .recording import BagRecorder, OutputRecorder, bag_qos, message_class, recording_typestore
from ..core.errors import ReplayError
from ..ros.dds_profile import use_large_image_profile

PROG = "vlm_perception_replay"
# A reliable writer drops a sample that is not yet acknowledged when `depth` newer ones follow it;
# with depth 10 a burst of 30 raw 1280x720 frames (a bag written without real timing) lost 4 to 11.
PUBLISH_DEPTH = 100
ACK_TIMEOUT_S = 5.0
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
CLOCK_PERIOD_S = 0.025
GRAPH_SCAN_PERIOD_S = 0.5
PROGRESS_PERIOD_S = 1.0
FRAME_TIMEOUT_S = 30.0


def publish_qos(topic: BagTopic) -> QoSProfile:
    """Reliable (matches every subscriber, loses nothing), with the durability the bag's publishers offered.

    A latched topic keeps every message of the bag: several static broadcasters each publish once
    on /tf_static, and a late subscriber needs all of them. Images keep the last PUBLISH_DEPTH.
    """
    if not latched(topic.name, topic.msgtype, topic.durabilities):
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=PUBLISH_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
    depth = PUBLISH_DEPTH if topic.msgtype in IMAGE_TYPES else max(topic.count, 1)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Progress:
    """One line on stderr at most once a second: percentage and bag time."""

    def __init__(self, stream: TextIO, enabled: bool, start_ns: int, end_ns: int) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._start_ns = start_ns
        self._span_ns = max(end_ns - start_ns, 1)
        self._last = -PROGRESS_PERIOD_S
        self._wrote = False

    def update(self, bag_ns: int, loop_pass: int) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < PROGRESS_PERIOD_S:
            return
        self._last = now
        done = (bag_ns - self._start_ns) / self._span_ns
        line = (f"replay {100 * done:5.1f}%  bag time {bag_ns / 1e9:.3f} s "
                f"({(bag_ns - self._start_ns) / 1e9:.1f} of {self._span_ns / 1e9:.1f} s)")
        if loop_pass > 1:
            line += f", pass {loop_pass}"
        # On a terminal the line is rewritten in place; in a log each report is its own line.
        self._stream.write(f"\r{line}  " if self._tty else f"{line}\n")
        self._stream.flush()
        self._wrote = True

    def finish(self) -> None:
        if self._wrote and self._tty:
            self._stream.write("\n")


class Player:
    """Publishes the bag's messages with its timing scaled by `rate`, and /clock with bag time."""

    def __init__(self, node: Node, bag: BagReader, topics: dict[str, BagTopic], remaps: dict[str, str],
                 rate: float, clock: bool, stop: threading.Event) -> None:
        self.bag = bag
        self.topics = topics
        self.names = {topic: remaps.get(topic, topic) for topic in topics}
        self.qos = {topic: publish_qos(info) for topic, info in topics.items()}
        self.publishers = {
            topic: node.create_publisher(message_class(info.msgtype), self.names[topic], self.qos[topic])
            for topic, info in topics.items()}
        self._clock = node.create_publisher(Clock, "/clock", CLOCK_QOS) if clock else None
        self._clock_ns = -1
        self.rate = rate
        self.stop = stop
        self.recorder: Optional[BagRecorder] = None
        self.outputs: Optional[OutputRecorder] = None
        self.lockstep: Optional[Lockstep] = None
        self._last_scan = 0.0

    def record_into(self, recorder: BagRecorder, outputs: OutputRecorder) -> None:
        self.recorder, self.outputs = recorder, outputs
        for topic, info in self.topics.items():
            recorder.add_topic(self.names[topic], info.msgtype, [bag_qos(self.qos[topic])], info.msgdef, info.digest)

    def wait_for_discovery(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            self._scan_outputs(force=True)
            if self.lockstep is not None:
                self.lockstep.gate.scan(force=True)
            if all(pub.get_subscription_count() > 0 for pub in self.publishers.values()) and (
                    self.outputs is None or self.outputs.ready()) and (
                    self.lockstep is None or self.lockstep.gate.ready()):
                return
            self.stop.wait(0.05)

    def play(self, loop: bool, progress: Progress) -> None:
        loop_pass = 0
        while not self.stop.is_set() and (loop or loop_pass == 0):
            loop_pass += 1
            self._clock_ns = -1  # a new pass starts the bag time over
            origin_wall, origin_bag = time.monotonic(), self.bag.start_ns
            for msg in self.bag.messages(list(self.topics)):
                if self.lockstep is None:
                    due = origin_wall + (msg.timestamp_ns - origin_bag) / 1e9 / self.rate
                    if not self._wait(due, origin_wall, origin_bag):
                        return
                elif self.stop.is_set():
                    return
                self._publish(msg)
                progress.update(msg.timestamp_ns, loop_pass)
                if self.lockstep is not None and msg.topic == self.lockstep.topic:
                    self.lockstep.after_publishing(msg.data, self._scan_outputs)

    def wait_for_acks(self) -> list[str]:
        """Wait until reliable subscribers acknowledged every message; the topics where some were not."""
        deadline = time.monotonic() + ACK_TIMEOUT_S
        return [self.names[topic] for topic, publisher in self.publishers.items()
                if not publisher.wait_for_all_acked(Duration(seconds=max(deadline - time.monotonic(), 0.0)))]

    def _wait(self, due: float, origin_wall: float, origin_bag: int) -> bool:
        """Sleep until `due`, keeping /clock moving; False when stopped."""
        while (now := time.monotonic()) < due:
            self._publish_clock(origin_bag + round((now - origin_wall) * self.rate * 1e9))
            self._scan_outputs()
            if self.stop.wait(min(due - now, CLOCK_PERIOD_S)):
                return False
        return not self.stop.is_set()

    def _publish(self, msg: BagMessage) -> None:
        self._publish_clock(msg.timestamp_ns)  # the node's clock reaches a message's time before it arrives
        self.publishers[msg.topic].publish(msg.data)
        if self.recorder is not None:
            self.recorder.write(self.names[msg.topic], time.time_ns(), msg.data)

    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock is None or bag_ns <= self._clock_ns:
            return
        self._clock_ns = bag_ns
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = divmod(bag_ns, 1_000_000_000)
        self._clock.publish(clock)

    def _scan_outputs(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.outputs is not None and (force or now - self._last_scan >= GRAPH_SCAN_PERIOD_S):
            self._last_scan = now
            self.outputs.scan()


def _validated(text: str, validate: Callable[[str], object], kind: str) -> str:
    name = text if text.startswith("/") else f"/{text}"
    try:
        validate(name)
    except Exception as exc:  # rclpy's Invalid*Exception classes, whose module moved between distros
        raise argparse.ArgumentTypeError(f"{name!r} is not a valid {kind}: {exc}") from exc
    return name


def _absolute(name: str) -> str:
    return _validated(name, validate_full_topic_name, "topic name")


def _namespace(text: str) -> str:
    return _validated(text, validate_namespace, "namespace")


def _remap(text: str) -> tuple[str, str]:
    source, sep, target = text.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"{text!r} is not FROM:=TO, e.g. /camera/color/image_raw:=/ns/image")
    return _absolute(source), _absolute(target)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("bag", type=Path, metavar="BAG", help="rosbag2 directory, or one .mcap or .db3 file")
    parser.add_argument("--rate", type=positive, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    parser.add_argument("--topics", nargs="+", action="extend", type=_absolute, default=[], metavar="T",
                        help="replay only these bag topics (default: all)")
    parser.add_argument("--remap", nargs="+", action="extend", type=_remap, default=[], metavar="FROM:=TO",
                        help="publish bag topic FROM as TO")
    parser.add_argument("--clock", action=argparse.BooleanOptionalAction, default=True,
                        help="publish /clock with the bag time (default: on)")
    parser.add_argument("--start-delay", type=non_negative, default=3.0, metavar="S",
                        help="wait up to S s for subscribers before the first message (default 3.0)")
    parser.add_argument("--progress", action="store_true",
                        help="report progress on stderr even when it is not a terminal")
    parser.add_argument("--lockstep", action="store_true",
                        help="publish each camera frame once the node has answered the one before")
    parser.add_argument("--frame-timeout", type=positive, metavar="S",
                        help=f"with --lockstep: go on after S s without an answer (default {FRAME_TIMEOUT_S:g})")
    parser.add_argument("--frame-topic", type=_absolute, metavar="T",
                        help="with --lockstep: the bag's camera topic to step on (default: the image topic "
                             "named *color*, or the only one)")
    parser.add_argument("--record", type=Path, metavar="OUT", help="record inputs and outputs into this new bag")
    parser.add_argument("--record-topics", nargs="+", action="extend", type=_absolute, default=[], metavar="T",
                        help="record these topics instead of the discovered vlm_perception outputs")
    parser.add_argument("--record-namespace", type=_namespace, default="/", metavar="NS",
                        help="discover outputs (to record, and for --lockstep) under this namespace only "
                             "(default: /)")
    parser.add_argument("--record-tail", type=non_negative, default=1.0, metavar="S",
                        help="keep recording S s after the last message (default 1.0)")
    args = parser.parse_args(argv)
    if not args.lockstep and (args.frame_timeout is not None or args.frame_topic is not None):
        parser.error("--frame-timeout and --frame-topic apply to --lockstep; add --lockstep")
    if args.frame_timeout is None:
        args.frame_timeout = FRAME_TIMEOUT_S
    return args


def _chosen_topics(bag: BagReader, args: argparse.Namespace) -> dict[str, BagTopic]:
    names = args.topics or sorted(bag.topics)
    unknown = [name for name in names + [source for source, _ in args.remap] if name not in bag.topics]
    if unknown:
        raise ReplayError(f"{', '.join(unknown)} not in {args.bag}; its topics: "
                          + ", ".join(f"{t.name} ({t.msgtype})" for t in bag.topics.values()))
    if not sum(bag.topics[name].count for name in names):
        raise ReplayError(f"{args.bag} has no messages on {', '.join(names) or 'any topic'}; "
                          f"choose other --topics or record the bag again")
    unsupported = []
    for name in names:
        try:
            message_class(bag.topics[name].msgtype)
        except ReplayError as exc:
            unsupported.append(f"{name}: {exc}")
    if unsupported:
        raise ReplayError(f"cannot replay {'; '.join(unsupported)}; install and source the package that "
                          f"defines it, or leave the topic out with --topics")
    return {name: bag.topics[name] for name in names}


def _check_lockstep_gate(gate: OutputGate, args: argparse.Namespace) -> None:
    """Refuse to step on a node that is not there; warn when it has nothing to answer with."""
    if not gate.ready():
        raise ReplayError(
            f"--lockstep found no vlm_perception ~/presence output and ~/standing_queries under "
            f"{args.record_namespace} within --start-delay {args.start_delay:g} s; start the node first, raise "
            f"--start-delay (a model may take a while to load), or set --record-namespace to the node's namespace")
    if not any(gate.standing_queries().values()):
        print(f"{PROG}: note: the node has no standing queries (queries empty or rate_hz 0); each frame waits "
              f"for a service call's output, or --frame-timeout", file=sys.stderr)


def replay(args: argparse.Namespace) -> None:
    """Everything is checked before the first message goes out; raises ReplayError."""
    stop = threading.Event()
    with BagReader(args.bag) as bag:
        topics = _chosen_topics(bag, args)
        if bag.note:
            print(f"{PROG}: note: {bag.note}", file=sys.stderr)
        for info in topics.values():
            if info.qos_problem:
                print(f"{PROG}: note: {info.name}: {info.qos_problem}; replayed as if the bag recorded no QoS "
                      f"({publish_qos(info).durability.name})", file=sys.stderr)
        recorder = BagRecorder(args.record, recording_typestore()) if args.record else None
        # Our own arguments are not ROS arguments (rcl would read FROM:=TO as remap rules).
        rclpy.init(args=[PROG], signal_handler_options=SignalHandlerOptions.NO)
        node = Node("vlm_perception_replay")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        previous = {sig: signal.signal(sig, lambda _sig, _frame: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        problem: Optional[ReplayError] = None
        outputs: Optional[OutputRecorder] = None
        try:
            spinner.start()
            player = Player(node, bag, topics, dict(args.remap), args.rate, args.clock, stop)
            if recorder is not None:
                outputs = OutputRecorder(node, recorder, args.record_namespace, args.record_topics,
                                         set(player.names.values()) | {"/clock"})
                player.record_into(recorder, outputs)
            if args.lockstep:
                player.lockstep = Lockstep(
                    OutputGate(node, args.record_namespace, message_class),
                    frame_topic({name: info.msgtype for name, info in topics.items()}, args.frame_topic),
                    args.frame_timeout, stop, lambda line: print(f"{PROG}: {line}", file=sys.stderr))
            player.wait_for_discovery(args.start_delay)
            if player.lockstep is not None:
                _check_lockstep_gate(player.lockstep.gate, args)
            progress = Progress(sys.stderr, args.progress or sys.stderr.isatty(), bag.start_ns, bag.end_ns)
            try:
                player.play(args.loop, progress)
            except ReplayError as exc:  # a damaged bag: record the outputs of what was played, then report
                problem = exc
            progress.finish()
            if player.lockstep is not None and player.lockstep.timed_out:
                print(f"{PROG}: lockstep: {player.lockstep.timed_out} of {player.lockstep.frames} frames got no "
                      f"output within --frame-timeout {args.frame_timeout:g} s", file=sys.stderr)
            if not stop.is_set():
                for topic in player.wait_for_acks():
                    print(f"{PROG}: note: subscribers of {topic} did not acknowledge every message within "
                          f"{ACK_TIMEOUT_S:g} s; they may have missed the last ones", file=sys.stderr)
            if outputs is not None:
                stop.wait(args.record_tail)
                for topic in outputs.missing():
                    print(f"{PROG}: note: {topic} never appeared on the graph; nothing recorded from it",
                          file=sys.stderr)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            executor.shutdown(timeout_sec=2.0)
            spinner.join(timeout=2.0)
            node.destroy_node()
            rclpy.try_shutdown()
            if recorder is not None:
                recorder.close()
        if problem is not None:
            raise problem


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    # Raw frames reach a subscriber in another process only if the publisher's segment holds them.
    use_large_image_profile()
    try:
        replay(args)
    except ReplayError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
