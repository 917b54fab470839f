"""Report on a recorded run: presence over time, and the frames where it changed.

`vlm_perception_report RUN_BAG` reads a rosbag2 (MCAP or sqlite3) written by
`vlm_perception_replay --record`: the camera input plus the node's
`~/presence` and `~/grasp_targets` outputs. It prints presence per query over
time, and writes `presence.png` (confidence against threshold per query) and
`contact_sheet.png` (the first evaluated frame and every frame where presence
changed, with the grasp target boxes drawn).

With `--labels labels.yaml` (format in vlm_perception.bag.labels) it scores
each labelled query: precision, recall, F1, the confusion counts, frames
evaluated of frames in the bag, and inference latency p50/p95; wrong frames
are marked in the plot and put on the contact sheet. `--junit FILE` writes
one JUnit test case per query, failing where F1 is below `--min-f1` or the
query was evaluated on no frame of the bag.
Exit status: 0 done; 1 the run or the labels cannot be reported on (one line
on stderr says what to fix); 2 bad arguments; 3 with --min-f1, a query's F1 is
below it or a labelled query was never evaluated.

Outputs carry their source image's header, so they are matched to frames by
(stamp, frame_id). Reading uses rosbags, not rclpy, so the report runs
anywhere the venv does.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import get_types_from_msg
from rosbags.typesys.store import Typestore

from vlm_perception.bag.bagfile import MSGS_PACKAGE, installed_msg_types, jazzy_typestore
from vlm_perception.bag.cli_args import fraction, positive_int
from vlm_perception.bag.labels import ResolvedLabels, load_labels
from vlm_perception.bag.scoring import QueryScore, ScoredOutput, failed, junit_xml, render_scores, score
from vlm_perception.core.errors import ImageError, ReportError
from vlm_perception.core.frames import stamp_to_ns
from vlm_perception.core.images import image_msg_to_rgb8

IMAGE_TYPE = "sensor_msgs/msg/Image"
PRESENCE_TYPE = "vlm_perception_msgs/msg/ObjectPresenceArray"
GRASP_TYPE = "vlm_perception_msgs/msg/GraspTargetArray"
_RECORD_HINT = "record with vlm_perception_replay --record"
_DPI = 100
_TILE_INCHES = 4.0  # contact-sheet tile width: 400 px at _DPI
_SHEET_COLUMNS = 4
_WRONG_COLOUR = "crimson"
EXIT_BELOW_MIN_F1 = 3

FrameKey = tuple[int, str]  # (header stamp in ns, frame_id): how an output names its source image


@dataclass(frozen=True)
class Presence:
    present: bool
    confidence: float
    threshold: float


@dataclass(frozen=True)
class PresenceOutput:
    key: FrameKey
    results: dict[str, Presence]  # by query
    inference_ms: float = 0.0


@dataclass(frozen=True)
class Target:
    query: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in source-image pixels


@dataclass(frozen=True)
class Run:
    bag: Path
    image_topic: str
    presence_topics: list[str]
    frames: list[FrameKey]  # every frame on image_topic, in bag order
    outputs: list[PresenceOutput]  # ordered by source stamp
    targets: dict[FrameKey, list[Target]]  # grasp targets per source frame, best first
    queries: list[str]  # in order of first appearance: the table's columns, the plot's rows
    t0_ns: int  # stamp of the first frame; report times are relative to it

    def seconds(self, index: int) -> float:
        """Time of output `index` in seconds from the first frame."""
        return (self.outputs[index].key[0] - self.t0_ns) / 1e9


@dataclass(frozen=True)
class Analysis:
    # Per output: query -> (before, after) for each query whose presence changed;
    # before is None for a query first seen after the first output.
    changes: list[dict[str, tuple[bool | None, bool]]]
    tiles: list[int]  # outputs on the contact sheet: the first, each change, each start of a wrong streak
    not_shown: int  # changes (and wrong streaks) left off the sheet by max_frames
    without_frame: int  # changes whose source frame is not in the bag
    wrong: dict[int, list[str]] = field(default_factory=dict)  # output index -> queries it got wrong


@contextmanager
def _open_bag(bag: Path) -> Iterator[Reader]:
    try:
        reader = Reader(bag)
        reader.open()
    except (FileNotFoundError, ReaderError) as exc:
        raise ReportError(
            f"cannot read {bag}: {str(exc).rstrip('.')}; pass a rosbag2 directory (or its .mcap/.db3 file), "
            f"{_RECORD_HINT}"
        ) from exc
    try:
        yield reader
    finally:
        reader.close()


def _typestore(bag: Path, reader: Reader) -> Typestore:
    """Jazzy's types plus vlm_perception_msgs: from the installed package, else from the bag."""
    types = installed_msg_types()
    if types is None:
        # MCAP and sqlite3 (v9) bags store the definitions, so a bare venv can still read them.
        types = {}
        for connection in reader.connections:
            if (connection.msgtype.startswith(f"{MSGS_PACKAGE}/")
                    and connection.msgdef.format == MessageDefinitionFormat.MSG):
                types.update(get_types_from_msg(connection.msgdef.data, connection.msgtype))
        if not types:
            raise ReportError(
                f"{MSGS_PACKAGE} is not installed and {bag} does not store its message "
                "definitions; source the workspace first (. scripts/env.sh or install/setup.bash)"
            )
    return jazzy_typestore(types)


def _key(header: Any) -> FrameKey:
    return (stamp_to_ns(header.stamp), str(header.frame_id))


def _image_topic(bag: Path, topics: dict[str, str], requested: str | None) -> str:
    images = sorted(topic for topic, msgtype in topics.items() if msgtype == IMAGE_TYPE)
    if requested is not None:
        if requested not in images:
            raise ReportError(
                f"{requested} is not a {IMAGE_TYPE} topic in {bag}; "
                f"its Image topics: {', '.join(images) or 'none'}"
            )
        return requested
    choices = [topic for topic in images if "color" in topic] or images
    if not choices:
        raise ReportError(
            f"no {IMAGE_TYPE} topic in {bag}; the camera input must be recorded too "
            f"({_RECORD_HINT})"
        )
    if len(choices) > 1:
        raise ReportError(
            f"several Image topics in {bag} ({', '.join(choices)}); "
            "choose the camera input with --image-topic"
        )
    return choices[0]


def _of_camera(outputs: list[tuple[str, PresenceOutput]], frames: list[FrameKey],
               presence_topics: list[str]) -> tuple[list[PresenceOutput], list[str]]:
    """The outputs about the chosen camera: a multi-camera node publishes one ~/<camera>/presence each.

    Outputs carry their source header, so the camera's frame_id tells them apart; when no
    output has it (the frames were re-stamped or re-framed), everything is kept.
    """
    frame_ids = {frame_id for _, frame_id in frames}
    mine = [(topic, output) for topic, output in outputs if output.key[1] in frame_ids]
    if not mine:
        return [output for _, output in outputs], presence_topics
    return [output for _, output in mine], sorted({topic for topic, _ in mine})


def load(bag: Path, image_topic: str | None = None) -> Run:
    """Frames and outputs of a recorded run (no pixels: see load_images)."""
    with _open_bag(bag) as reader:
        presence_topics = sorted({
            c.topic
            for c in reader.connections
            if c.topic.endswith("/presence") and c.msgtype == PRESENCE_TYPE
        })
        if not presence_topics:
            raise ReportError(f"no ~/presence outputs in {bag}; {_RECORD_HINT}")
        topic = _image_topic(bag, {c.topic: c.msgtype for c in reader.connections}, image_topic)
        typestore = _typestore(bag, reader)
        connections = [
            c
            for c in reader.connections
            if c.topic == topic
            or c.topic in presence_topics
            or (c.topic.endswith("/grasp_targets") and c.msgtype == GRASP_TYPE)
        ]
        frames: list[FrameKey] = []
        outputs: list[tuple[str, PresenceOutput]] = []  # with the topic each came on
        targets: dict[FrameKey, list[Target]] = {}
        for connection, _, raw in reader.messages(connections=connections):
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            key = _key(msg.header)
            if connection.topic == topic:
                frames.append(key)
            elif connection.msgtype == PRESENCE_TYPE:
                results = {
                    r.query: Presence(bool(r.present), float(r.confidence), float(r.threshold))
                    for r in msg.results
                }
                outputs.append((connection.topic, PresenceOutput(key, results, float(msg.inference_ms))))
            else:
                frame_targets = targets.setdefault(key, [])
                for t in msg.targets:
                    u, v, half_w, half_h = t.center_u, t.center_v, t.width_px / 2, t.height_px / 2
                    box = (float(u - half_w), float(v - half_h), float(u + half_w), float(v + half_h))
                    target = Target(t.query, float(t.score), box)
                    # A service call on a frame the standing queries saw repeats their targets.
                    if target not in frame_targets:
                        frame_targets.append(target)
    if not outputs:
        raise ReportError(
            f"no ~/presence outputs in {bag} ({', '.join(presence_topics)} empty); {_RECORD_HINT}"
        )
    if not frames:
        raise ReportError(f"no frames on {topic} in {bag}; pass the camera input with --image-topic")
    outputs, presence_topics = _of_camera(outputs, frames, presence_topics)
    queries = list(dict.fromkeys(query for output in outputs for query in output.results))
    if not queries:
        raise ReportError(
            f"the ~/presence outputs in {bag} hold no results; set the node's queries parameter "
            "before recording"
        )
    if not {output.key for output in outputs} & set(frames):
        raise ReportError(
            f"no ~/presence output in {bag} matches a frame on {topic} by header stamp and "
            "frame_id; pass the topic the node was fed with --image-topic"
        )
    outputs.sort(key=lambda output: output.key[0])  # stable: outputs of one frame keep their order
    t0_ns = min(stamp for stamp, _ in frames)
    return Run(bag, topic, presence_topics, frames, outputs, targets, queries, t0_ns)


def wrong_outputs(scores: Sequence[QueryScore]) -> dict[int, list[str]]:
    """Output index -> the queries it answered against the labels."""
    wrong: dict[int, list[str]] = {}
    for query_score in scores:
        for index in query_score.wrong:
            wrong.setdefault(index, []).append(query_score.query)
    return dict(sorted(wrong.items()))


def analyse(run: Run, max_frames: int, wrong: dict[int, list[str]] | None = None) -> Analysis:
    """Where presence changed (or was wrong), and which outputs the contact sheet shows."""
    wrong = wrong or {}
    last: dict[str, bool] = {}
    changes: list[dict[str, tuple[bool | None, bool]]] = []
    for index, output in enumerate(run.outputs):
        changed: dict[str, tuple[bool | None, bool]] = {}
        for query, result in output.results.items():
            before = last.get(query)
            # A query first seen later (queries changed at run time) is news; at the start it is not.
            if before != result.present and index > 0:
                changed[query] = (before, result.present)
            last[query] = result.present
        changes.append(changed)
    frames = set(run.frames)
    # A streak of wrong answers on one query is shown by its first frame.
    streak_starts, previous = set(), set()
    for index in range(len(run.outputs)):
        current = set(wrong.get(index, []))
        if current - previous:
            streak_starts.add(index)
        previous = current
    candidates = [index for index, changed in enumerate(changes) if index == 0 or changed or index in streak_starts]
    with_frame = [index for index in candidates if run.outputs[index].key in frames]
    tiles = with_frame[:max_frames]
    without_frame = sum(1 for i in candidates if changes[i] and run.outputs[i].key not in frames)
    return Analysis(changes, tiles, len(with_frame) - len(tiles), without_frame, wrong)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cell(result: Presence | None, changed: bool) -> str:
    if result is None:  # this output did not evaluate the query (e.g. a service call)
        return "-"
    return f"{'yes' if result.present else 'no'} {result.confidence:.2f}{'*' if changed else ''}"


def render_table(run: Run, analysis: Analysis) -> str:
    """Presence per query over time; rows without a change are condensed."""
    last = len(run.outputs) - 1
    shown = [index for index, changed in enumerate(analysis.changes) if changed or index in (0, last)]
    header = ["time s", *run.queries]
    rows = {
        index: [
            f"{run.seconds(index):.3f}",
            *(
                _cell(run.outputs[index].results.get(query), query in analysis.changes[index])
                for query in run.queries
            ),
        ]
        for index in shown
    }
    widths = [max(len(header[c]), *(len(row[c]) for row in rows.values())) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        rest = (cell.ljust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  ".join([cells[0].rjust(widths[0]), *rest]).rstrip()

    lines = [line(header)]
    previous = -1
    for index in shown:
        if index - previous > 1:
            lines.append(f"{'':>{widths[0]}}  ... {_count(index - previous - 1, 'row')} without a change")
        lines.append(line(rows[index]))
        previous = index
    total, omitted = _count(len(run.outputs), "output"), _count(len(run.outputs) - len(shown), "row")
    lines.append(f"{total}, {omitted} without a change omitted; * = presence changed")
    return "\n".join(lines)


def _colours(queries: list[str]) -> dict[str, Any]:
    palette = matplotlib.colormaps["tab10"]
    return {query: palette(i % palette.N) for i, query in enumerate(queries)}


def _hold_ends(times: np.ndarray) -> np.ndarray:
    """When each output stops holding: at the next output's time."""
    # The last output has no successor; give it one typical frame interval so it shows
    # (unique times: a frame evaluated more than once would make the typical interval 0).
    distinct = np.unique(times)
    step = float(np.median(np.diff(distinct))) if len(distinct) > 1 else 0.1
    return np.append(times[1:], times[-1] + step)


def _present_intervals(
    times: np.ndarray, ends: np.ndarray, present: np.ndarray
) -> list[tuple[float, float]]:
    """Merged spans of consecutive outputs that found the query present."""
    intervals: list[tuple[float, float]] = []
    for start, end, on in zip(times, ends, present):
        if not on:
            continue
        if intervals and intervals[-1][1] == start:
            intervals[-1] = (intervals[-1][0], float(end))
        else:
            intervals.append((float(start), float(end)))
    return intervals


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no display needed, and pyplot's global state is untouched
    return fig


def render_plot(run: Run, labels: ResolvedLabels | None = None,
                wrong: dict[int, list[str]] | None = None) -> Figure:
    """Confidence over time per query, threshold dashed, present intervals shaded.

    With labels: the labelled-present intervals as a bar along the bottom, wrong answers as crosses.
    """
    wrong = wrong or {}
    fig = _figure(10.0, 0.8 + 1.8 * len(run.queries))
    axes = fig.subplots(len(run.queries), 1, sharex=True, squeeze=False)[:, 0]
    colours = _colours(run.queries)
    for ax, query in zip(axes, run.queries):
        indices = [i for i, output in enumerate(run.outputs) if query in output.results]
        results = [run.outputs[i].results[query] for i in indices]
        times = np.array([run.seconds(i) for i in indices])
        confidence = np.array([r.confidence for r in results])
        threshold = np.array([r.threshold for r in results])
        ends = _hold_ends(times)
        present = np.array([r.present for r in results])
        for n, (start, end) in enumerate(_present_intervals(times, ends, present)):
            label = "present" if n == 0 else None
            ax.axvspan(start, end, color=colours[query], alpha=0.15, lw=0, label=label)
        ax.step(
            np.append(times, ends[-1]), np.append(threshold, threshold[-1]),
            where="post", ls="--", color="0.3", lw=1, label="threshold",
        )
        ax.plot(times, confidence, "o-", color=colours[query], ms=3, lw=1.2, label="confidence")
        if labels is not None and query in labels.intervals:
            spans = [((start - run.t0_ns) / 1e9, (end - start) / 1e9) for start, end in labels.intervals[query]]
            ax.broken_barh(spans, (0.0, 0.06), transform=ax.get_xaxis_transform(), color="0.15",
                           label="labelled present")
            missed = [n for n, i in enumerate(indices) if query in wrong.get(i, [])]
            ax.plot(times[missed], confidence[missed], "x", color=_WRONG_COLOUR, ms=8, mew=2,
                    label=f"wrong ({len(missed)})")
        ax.set_ylim(0, min(1.02, 1.15 * max(confidence.max(), threshold.max(), 0.05)))
        ax.set_title(query, loc="left", fontsize=10)
        ax.set_ylabel("confidence")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # outside, not over data
    axes[-1].set_xlabel(f"time since the first frame on {run.image_topic} (s)")
    return fig


def load_images(run: Run, keys: Collection[FrameKey]) -> dict[FrameKey, np.ndarray]:
    """RGB pixels of the frames in `keys`, read in a second pass so only those are decoded."""
    wanted = set(keys)
    images: dict[FrameKey, np.ndarray] = {}
    typestore = jazzy_typestore({})  # Image is a standard type
    with _open_bag(run.bag) as reader:
        connections = [c for c in reader.connections if c.topic == run.image_topic]
        for connection, _, raw in reader.messages(connections=connections):
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            key = _key(msg.header)
            if key not in wanted or key in images:
                continue
            try:
                images[key] = image_msg_to_rgb8(msg)
            except ImageError as exc:
                raise ReportError(
                    f"cannot draw the frame at {(key[0] - run.t0_ns) / 1e9:.3f} s on "
                    f"{run.image_topic}: {exc}"
                ) from exc
            if len(images) == len(wanted):
                break
    return images


def _state(present: bool | None) -> str:
    return "new" if present is None else "yes" if present else "no"


def _caption(run: Run, analysis: Analysis, index: int) -> str:
    wrong = analysis.wrong.get(index)
    if wrong:
        results = run.outputs[index].results
        said = ", ".join(f"{query} said {_state(results[query].present)}" for query in wrong)
        return textwrap.fill(f"t={run.seconds(index):.2f} s  WRONG: {said}", width=50)
    changed = analysis.changes[index]
    if changed:
        what = ", ".join(
            f"{query} {_state(before)}\u2192{_state(after)}" for query, (before, after) in changed.items()
        )
    else:
        results = run.outputs[index].results
        what = "start: " + ", ".join(f"{query} {_state(r.present)}" for query, r in results.items())
    return textwrap.fill(f"t={run.seconds(index):.2f} s  {what}", width=50)


def render_contact_sheet(run: Run, analysis: Analysis, images: dict[FrameKey, np.ndarray]) -> Figure:
    """One tile per chosen output: its source frame, grasp target boxes, and a caption."""
    columns = min(len(analysis.tiles), _SHEET_COLUMNS)
    rows = -(-len(analysis.tiles) // columns)
    height, width = images[run.outputs[analysis.tiles[0]].key].shape[:2]
    fig = _figure(_TILE_INCHES * columns, rows * (_TILE_INCHES * height / width + 0.6))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    colours = _colours(run.queries)
    for ax in axes:
        ax.set_axis_off()
    for ax, index in zip(axes, analysis.tiles):
        key = run.outputs[index].key
        image = images[key]
        ax.imshow(image)
        for target in run.targets.get(key, []):
            # Boxes are in pixel-edge coordinates; imshow puts pixel centres on integers.
            x0, y0, x1, y1 = (v - 0.5 for v in target.box)
            colour = colours.get(target.query, "white")
            ax.add_patch(
                Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2)
            )
            # Label above the box (inside it at the top edge), growing away from the nearer
            # side edge so long queries are not clipped.
            above = y0 > 0.08 * image.shape[0]
            left = (x0 + x1) / 2 < image.shape[1] / 2
            ax.text(
                x0 if left else x1,
                y0 if above else y0 + 1,
                f"{target.query} {target.score:.2f}",
                color="white",
                fontsize=8,
                ha="left" if left else "right",
                va="bottom" if above else "top",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5},
                clip_on=True,
            )
        wrong = index in analysis.wrong
        ax.set_title(_caption(run, analysis, index), fontsize=9, color=_WRONG_COLOUR if wrong else "black",
                     fontweight="bold" if wrong else "normal")
        if wrong:  # a red frame around the picture
            ax.add_patch(Rectangle((-0.5, -0.5), image.shape[1], image.shape[0], fill=False,
                                   edgecolor=_WRONG_COLOUR, linewidth=4))
    return fig


def _save(fig: Figure, path: Path) -> None:
    _write_file(path, fig.savefig, "pass a writable --out")


def _write_file(path: Path, write: Callable[[Path], object], fix: str) -> None:
    """`write(path)`, its folder made first; a ReportError ending in `fix` when the disk refuses."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}; {fix}") from exc


def scores_against(run: Run, labels_path: Path) -> tuple[ResolvedLabels, list[QueryScore]]:
    """The run's answers scored against a labels file; LabelsError saying what to fix."""
    stamps = np.unique([stamp for stamp, _ in run.frames])
    period_ns = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 0
    labels = load_labels(labels_path).resolve(run.queries, int(stamps[0]), int(stamps[-1]), period_ns)
    outputs = [ScoredOutput(o.key, {q: r.present for q, r in o.results.items()}, o.inference_ms)
               for o in run.outputs]
    return labels, score(run.frames, outputs, labels)


def _write_text(path: Path, text: str) -> None:
    _write_file(path, lambda p: p.write_text(text), "pass a writable path")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm_perception_report",
        description="Presence over time, and annotated frames where it changed, of a run "
        "recorded with vlm_perception_replay --record.",
    )
    parser.add_argument(
        "bag", type=Path, metavar="RUN_BAG", help="rosbag2 directory, or its .mcap/.db3 file"
    )
    parser.add_argument(
        "--out", type=Path, help="directory for the PNGs (default: RUN_BAG_report beside RUN_BAG)"
    )
    parser.add_argument(
        "--image-topic",
        help="camera input topic (default: the Image topic named *color*, or the only Image topic)",
    )
    parser.add_argument(
        "--max-frames", type=positive_int, default=12, help="most frames on the contact sheet (default: 12)"
    )
    parser.add_argument("--labels", type=Path, metavar="LABELS_YAML",
                        help="score the answers against these labels (format: README, 'Labels')")
    parser.add_argument("--junit", type=Path, metavar="FILE",
                        help="with --labels: write JUnit XML, one test case per query")
    parser.add_argument("--min-f1", type=fraction, metavar="F1",
                        help="with --labels: fail (exit 3, JUnit failure) where a query's F1 is below this "
                        "or a labelled query was never evaluated")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.junit or args.min_f1 is not None) and args.labels is None:
        parser.error("--junit and --min-f1 score against labels; pass --labels LABELS_YAML too")
    out: Path = args.out or args.bag.resolve().parent / f"{args.bag.resolve().stem}_report"
    scores: list[QueryScore] = []
    try:
        run = load(args.bag, args.image_topic)
        labels = None
        if args.labels is not None:
            labels, scores = scores_against(run, args.labels)
        analysis = analyse(run, args.max_frames, wrong_outputs(scores))
        topics = ", ".join(run.presence_topics)
        print(f"presence on {topics}; time from the first frame on {run.image_topic}")
        print(render_table(run, analysis))
        if labels is not None:
            print(f"scores against {args.labels} (each frame once per query):")
            print(render_scores(scores, args.min_f1))
            unlabelled = [query for query in run.queries if query not in labels.intervals]
            if unlabelled:
                print(f"  not scored (not in the labels): {', '.join(unlabelled)}")
        _save(render_plot(run, labels, analysis.wrong), out / "presence.png")
        images = load_images(run, [run.outputs[index].key for index in analysis.tiles])
        _save(render_contact_sheet(run, analysis, images), out / "contact_sheet.png")
        if args.junit is not None:
            _write_text(args.junit, junit_xml(scores, args.min_f1, "vlm_perception_report"))
    except ReportError as exc:
        print(f"vlm_perception_report: {exc}", file=sys.stderr)
        return 1
    changes = sum(1 for index in analysis.tiles if analysis.changes[index])
    print(f"wrote {out / 'presence.png'}: confidence over time per query")
    tiles = _count(len(analysis.tiles), "frame")
    print(f"wrote {out / 'contact_sheet.png'}: {tiles} ({changes} where presence changed)")
    if analysis.not_shown:
        print(f"  {_count(analysis.not_shown, 'more change')} not shown; raise --max-frames to see them")
    if analysis.without_frame:
        missing = _count(analysis.without_frame, "change")
        print(f"  {missing} not shown: the source frame is not on {run.image_topic} in the bag")
    if args.junit is not None:
        print(f"wrote {args.junit}: JUnit XML, one test case per labelled query")
    below = [s.query for s in scores if failed(s, args.min_f1) and s.evaluated]
    if below:
        print(f"vlm_perception_report: F1 below {args.min_f1:g} for {', '.join(below)}", file=sys.stderr)
    never = [s.query for s in scores if not s.evaluated]
    if never:
        print(f"vlm_perception_report: never evaluated on a frame of the bag: {', '.join(never)}; check the "
              "node's standing queries and --record-namespace when recording", file=sys.stderr)
    if any(failed(s, args.min_f1) for s in scores):
        return EXIT_BELOW_MIN_F1
    return 0


if __name__ == "__main__":
    sys.exit(main())
