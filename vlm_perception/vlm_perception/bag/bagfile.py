"""ROS-free rosbag2 reading for replay: topics, types and raw CDR messages in time order.

`BagReader` reads MCAP and sqlite3 bags (a rosbag2 directory, or one .mcap or
.db3 file) with rosbags' AnyReader. A damaged bag is read as far as it goes:
`messages()` yields every readable message and then raises ReplayError saying
what could not be read. A bag whose index cannot be used (an MCAP file cut
short has no summary; a cut sqlite3 file is shorter than its header says;
a recorder killed before writing metadata.yaml) is scanned record by record
from the start instead (MCAP files with the `mcap` library's stream reader), in
file order, which is time order for recorded bags. A scan that reads every
file to its end (e.g. only metadata.yaml was lost) lost nothing: no error,
and `note` says what was scanned. A bag whose recorded QoS
(offered_qos_profiles) rosbags cannot parse is scanned too, and each topic
says what it could not read of its QoS (`BagTopic.qos_problem`; see
offered_qos.py).
"""
from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Collection, Iterator, Optional

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from mcap.exceptions import EndOfFile
from mcap.reader import NonSeekingReader
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from .offered_qos import offered_durabilities
from ..core.errors import ReplayError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MSGS_PACKAGE = "vlm_perception_msgs"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_REPAIR_HINT = ("re-record the bag, or recover an MCAP file with `mcap recover` "
                "(a sqlite3 one with sqlite3's `.recover`)")


def installed_msg_types() -> Optional[dict[str, Any]]:
    """vlm_perception_msgs' types from its installed .msg files; None where it is not installed."""
    try:
        share = Path(get_package_share_directory(MSGS_PACKAGE))
    except PackageNotFoundError:
        return None
    types: dict[str, Any] = {}
    for path in sorted((share / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{MSGS_PACKAGE}/msg/{path.stem}"))
    return types


def jazzy_typestore(extra_types: dict[str, Any]) -> Typestore:
    """rosbags' ROS 2 Jazzy types plus `extra_types`."""
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(extra_types)
    return store


@dataclass(frozen=True)
class BagTopic:
    name: str
    msgtype: str  # 'pkg/msg/Name'
    count: int  # messages as the bag's index says (readable ones, for a scanned bag)
    msgdef: str = ""  # message definition stored in the bag ('' if none)
    digest: str = ""  # its RIHS01 hash ('' if none)
    durabilities: tuple[str, ...] = ()  # offered by each recorded publisher (none when the bag has no QoS)
    qos_problem: str = ""  # why the recorded offers could not be read ('' when they could)


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes  # CDR, as recorded


class BagReader:
    """Topics and raw messages of one rosbag2; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ReplayError(f"bag {self.path} does not exist; give a rosbag2 directory or an .mcap/.db3 file")
        if self.path.suffix == ".bag":  # AnyReader would read it, but as ROS 1 data, not CDR
            raise ReplayError(f"{self.path} is a ROS 1 bag; convert it first: "
                              f"rosbags-convert --src {self.path} --dst {self.path.with_suffix('')}")
        self.topics: dict[str, BagTopic] = {}
        self.start_ns = 0
        self.end_ns = 0
        # Why the bag's index could not be used; '' for a healthy bag.
        self.index_problem = ""
        # Set when the index was unusable but a scan read every message (e.g. metadata.yaml lost in a crash).
        self.note = ""
        self._reader: Optional[AnyReader] = None
        self._files: list[Path] = []
        # Raw offered_qos_profiles of each (storage file, channel or topic id) met while scanning: topic, text.
        self._scanned_offers: dict[tuple[Path, int], tuple[str, str]] = {}
        self._scan_problem = ""
        try:
            reader = AnyReader([self.path])
            reader.open()
        # KeyError: rosbags reads an offered_qos_profiles entry that lacks a policy (the scan reads what is there).
        except (AnyReaderError, FileNotFoundError, KeyError) as exc:
            self.index_problem = f"rosbags cannot read its metadata: no {exc}" if isinstance(exc, KeyError) \
                else str(exc)
            self._prepare_scan(qos_only=isinstance(exc, KeyError) or "offered_qos_profiles" in str(exc))
            return
        for conn in reader.connections:
            known = self.topics.get(conn.topic)
            if known is not None and known.msgtype != conn.msgtype:
                reader.close()
                raise ReplayError(f"topic {conn.topic} has two types in {self.path} ({known.msgtype}, "
                                  f"{conn.msgtype}); replay supports one type per topic")
            count = conn.msgcount + (known.count if known else 0)
            durabilities, problem = _durabilities(getattr(conn.ext, "offered_qos_profiles", ()))
            self.topics[conn.topic] = BagTopic(
                conn.topic, conn.msgtype, count, conn.msgdef.data, conn.digest,
                (known.durabilities if known else ()) + durabilities, (known.qos_problem if known else "") or problem)
        self._reader = reader
        if reader.message_count:
            self.start_ns, self.end_ns = reader.start_time, reader.end_time - 1

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        """Messages on `topics` in time order; raises ReplayError after the last readable one."""
        unknown = sorted(set(topics) - set(self.topics))
        if unknown:
            raise ReplayError(f"{', '.join(unknown)} not in {self.path}; "
                              f"its topics: {', '.join(sorted(self.topics))}")
        wanted = set(topics)
        if not wanted:
            return
        if self._reader is None:
            try:
                yield from (msg for msg in _until_broken(self._scan()) if msg.topic in wanted)
            except _Broken:
                pass  # where it broke is already in the report
            if self._scan_problem:
                raise ReplayError(self._scan_problem)
            return
        reader = self._reader
        connections = [c for c in reader.connections if c.topic in wanted]
        raw = (BagMessage(c.topic, c.msgtype, t, bytes(data)) for c, t, data in reader.messages(connections))
        try:
            yield from _until_broken(raw)
        except _Broken as exc:
            raise ReplayError(f"bag {self.path} is damaged: {exc}; the messages before were replayed; "
                              f"{_REPAIR_HINT}") from exc

    # --- scanning a bag whose index cannot be used -----------------------------------------

    def _prepare_scan(self, qos_only: bool = False) -> None:
        """`qos_only`: rosbags failed on the recorded QoS alone; a scan to the end then leaves nothing lost."""
        self._files = self._storage_files()
        types: dict[str, str] = {}
        counts: dict[str, int] = {}
        first_ns: Optional[int] = None
        last_ns = 0
        try:
            for msg in _until_broken(self._scan()):
                counts[msg.topic] = counts.get(msg.topic, 0) + 1
                types.setdefault(msg.topic, msg.msgtype)
                first_ns = msg.timestamp_ns if first_ns is None else min(first_ns, msg.timestamp_ns)
                last_ns = max(last_ns, msg.timestamp_ns)
            broken = ""
        except _Broken as exc:
            broken, qos_only = str(exc), False
        offers: dict[str, tuple[tuple[str, ...], str]] = {}
        for topic, text in self._scanned_offers.values():
            durabilities, problem = _durabilities(text)
            known, known_problem = offers.get(topic, ((), ""))
            offers[topic] = known + durabilities, known_problem or problem
        self.topics = {name: BagTopic(name, msgtype, counts[name], "", "", *offers.get(name, ((), "")))
                       for name, msgtype in types.items()}
        if first_ns is not None:
            self.start_ns, self.end_ns = first_ns, last_ns
        if qos_only:  # what the scan could not read of the QoS is in each topic's qos_problem
            return
        if not broken:  # nothing lost: say so, do not fail the replay
            self.note = (f"bag {self.path}: its index is unusable ({self.index_problem}), so it was scanned from "
                         f"the start and read to its end ({sum(counts.values())} messages); `ros2 bag reindex` "
                         f"writes a rosbag2 directory's metadata.yaml again")
            return
        self._scan_problem = (
            f"bag {self.path} is damaged: its index is unusable ({self.index_problem}), so it was scanned "
            f"from the start: {broken}; {sum(counts.values())} of its messages were readable (the part "
            f"replayed); {_REPAIR_HINT}")

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        names: list[str] = []
        try:
            info = yaml.safe_load((self.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            names = [Path(name).name for name in info["relative_file_paths"]]
            compression = str(info.get("compression_mode") or "").lower()
        except (OSError, yaml.YAMLError, KeyError, TypeError):  # missing after a crash: find the files
            compression = ""
        if compression == "file":
            raise ReplayError(f"bag {self.path} is damaged ({self.index_problem}) and file-compressed, which "
                              f"cannot be scanned; {_REPAIR_HINT}")
        files = [self.path / name for name in names if (self.path / name).exists()]
        files = files or sorted(self.path.glob("*.mcap")) + sorted(self.path.glob("*.db3"))
        if not files:
            raise ReplayError(f"bag {self.path} cannot be opened ({self.index_problem}) and holds no .mcap "
                              f"or .db3 file to scan; give a rosbag2 directory or an .mcap/.db3 file")
        return files

    def _scan(self) -> Iterator[BagMessage]:
        for path in self._files:
            scan = (_scan_mcap(path, self._scanned_offers) if path.suffix == ".mcap"
                    else _scan_sqlite3(path, self._scanned_offers))
            for msg in scan:
                # Per-message compression (rosbag2 compression_mode message) without trusting
                # metadata.yaml, which a crash may have left unwritten: a CDR message starts with a
                # 0x00 byte (its representation identifier), a zstd frame with its magic number.
                if msg.data[:4] == ZSTD_MAGIC:
                    msg = BagMessage(msg.topic, msg.msgtype, msg.timestamp_ns, zstd.decompress(msg.data))
                yield msg


def _durabilities(profiles: Any) -> tuple[tuple[str, ...], str]:
    """The recorded durability offers, and why they could not be read ('' when they could)."""
    try:
        return offered_durabilities(profiles), ""
    except ValueError as exc:
        return (), str(exc)


class _Broken(Exception):
    """Reading stopped on damaged data; says after which message."""


def _until_broken(messages: Iterator[BagMessage]) -> Iterator[BagMessage]:
    """Yield until the storage reader fails on damaged data, then raise _Broken saying where."""
    count, last_ns = 0, None
    while True:
        try:
            msg = next(messages)
        except StopIteration:
            return
        # Damaged bytes surface as many exception types (struct, zstd, sqlite, rosbags);
        # each means the same here: the rest cannot be read.
        except Exception as exc:
            after = f" (bag time {last_ns / 1e9:.3f} s)" if last_ns is not None else ""
            raise _Broken(f"reading stopped after message {count}{after}: {exc}") from exc
        count, last_ns = count + 1, msg.timestamp_ns
        yield msg


class _Cut(Exception):
    """The file ends inside a record: it was cut short."""


class _ExactReads:
    """A file whose reads return all the bytes asked for, or raise _Cut.

    mcap's reader takes a short read inside a record as the record's content (it stops only on
    a read of nothing), so a message cut by truncation would be published as if whole.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def read(self, size: int) -> bytes:
        data = self._stream.read(size)
        if data and len(data) != size:
            raise _Cut(f"file ends inside a record at byte {self._stream.tell()} (truncated)")
        return data


def _scan_mcap(path: Path, offers: dict[tuple[Path, int], tuple[str, str]]) -> Iterator[BagMessage]:
    """Messages of an MCAP file in file order, from its records alone (no summary needed).

    Fills `offers` with each channel's recorded offered_qos_profiles.
    """
    with path.open("rb") as stream:
        # CRCs catch a chunk whose bytes are damaged but whose length is intact.
        reader = NonSeekingReader(_ExactReads(stream), validate_crcs=True)
        try:
            for schema, channel, message in reader.iter_messages(log_time_order=False):
                offered = channel.metadata.get("offered_qos_profiles", "")
                offers.setdefault((path, channel.id), (channel.topic, offered))
                yield BagMessage(channel.topic, schema.name if schema else "", message.log_time, message.data)
        except EndOfFile as exc:  # raised without a message
            raise _Cut(f"file ends after byte {stream.tell()} without its footer (truncated)") from exc


def _scan_sqlite3(path: Path, offers: dict[tuple[Path, int], tuple[str, str]]) -> Iterator[BagMessage]:
    """Messages of a rosbag2 sqlite3 file in insertion order, as far as its pages are intact.

    Fills `offers` with each topic's recorded offered_qos_profiles.
    """
    db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    try:
        # Lets SQLite open a file shorter than its header says (a cut file); nothing is written.
        db.execute("PRAGMA writable_schema=ON")
        topics: dict[int, Any] = {row[0]: row[1:] for row in db.execute("SELECT id, name, type FROM topics")}
        try:
            for topic_id, text in db.execute("SELECT id, offered_qos_profiles FROM topics"):
                offers.setdefault((path, topic_id), (topics[topic_id][0], text or ""))
        except sqlite3.OperationalError:  # a bag older than the column: no offers recorded
            pass
        for topic_id, timestamp, data in db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
            name, msgtype = topics[topic_id]
            yield BagMessage(name, msgtype, timestamp, bytes(data))
    finally:
        db.close()
