"""vlm_perception_report on small run bags written here with rosbags (no ROS node needed)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from vlm_perception.bag import report
from vlm_perception.bag.bagfile import installed_msg_types, jazzy_typestore

WIDTH, HEIGHT = 64, 48
T0_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz camera
FRAMES = 11  # frame 0 has no output: the node was still starting
APPLE = {4, 5, 6, 7}  # frames showing the red block
BANANA = {1, 2, 9, 10}  # frames showing the yellow block
# query -> (RGB colour, (x, y, w, h))
BLOCKS = {"apple": ((255, 0, 0), (20, 14, 16, 16)), "banana": ((255, 220, 0), (44, 24, 12, 20))}
COLOR_TOPIC = "/camera/color/image_raw"
PRESENCE_TOPIC = "/vlm_perception/presence"
GRASP_TOPIC = "/vlm_perception/grasp_targets"
PRESENCE_TYPE = "vlm_perception_msgs/msg/ObjectPresenceArray"
GRASP_TYPE = "vlm_perception_msgs/msg/GraspTargetArray"


TS = jazzy_typestore(installed_msg_types())
T = TS.types


def _header(frame: int, frame_id: str = "camera_color_optical_frame") -> Any:
    stamp_ns = T0_NS + frame * PERIOD_NS
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _visible(frame: int) -> dict[str, bool]:
    return {"apple": frame in APPLE, "banana": frame in BANANA}


def _image(frame: int) -> Any:
    rgb = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    for query, shown in _visible(frame).items():
        if shown:
            colour, (x, y, w, h) = BLOCKS[query]
            rgb[y : y + h, x : x + w] = colour
    return T["sensor_msgs/msg/Image"](
        header=_header(frame), height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0,
        step=WIDTH * 3, data=rgb.reshape(-1),
    )


def _presence(frame: int) -> Any:
    results = [
        T["vlm_perception_msgs/msg/ObjectPresence"](
            header=_header(frame), query=query, present=shown, confidence=0.85 if shown else 0.02,
            threshold=0.1, count=int(shown),
        )
        for query, shown in _visible(frame).items()
    ]
    return T[PRESENCE_TYPE](header=_header(frame), results=results, backend="owlv2", inference_ms=40.0)


def _grasps(frame: int) -> Any:
    pose = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
    )
    targets = [
        T["vlm_perception_msgs/msg/GraspTarget"](
            header=_header(frame), query=query, score=0.85, center_u=x + w / 2, center_v=y + h / 2,
            width_px=float(w), height_px=float(h), has_pose=False, pose=pose, grasp_width=0.0,
            pose_status="no depth received on 'depth'",
        )
        for query, (_, (x, y, w, h)) in BLOCKS.items()
        if _visible(frame)[query]
    ]
    return T[GRASP_TYPE](header=_header(frame), targets=targets)


def write_bag(
    path: Path,
    storage: StoragePlugin = StoragePlugin.MCAP,
    image_topics: tuple[str, ...] = (COLOR_TOPIC,),
    outputs: bool = True,
    frames_not_recorded: frozenset[int] = frozenset(),
    service_query: str | None = None,
) -> Path:
    """A recorded run: camera frames and, from frame 1 on, the node's outputs with the same stamps.

    service_query: also one ~/presence output holding that query alone, about a request image stamped
    between frames 5 and 6 (a service call), so no frame of the bag.
    """
    with Writer(path, version=9, storage_plugin=storage) as writer:
        images = [writer.add_connection(t, "sensor_msgs/msg/Image", typestore=TS) for t in image_topics]
        if outputs:
            presence = writer.add_connection(PRESENCE_TOPIC, PRESENCE_TYPE, typestore=TS)
            grasps = writer.add_connection(GRASP_TOPIC, GRASP_TYPE, typestore=TS)
        for frame in range(FRAMES):
            time_ns = T0_NS + frame * PERIOD_NS
            if frame not in frames_not_recorded:
                for connection in images:
                    writer.write(connection, time_ns, TS.serialize_cdr(_image(frame), connection.msgtype))
            if outputs and frame > 0:
                done_ns = time_ns + 40_000_000  # published after inference
                writer.write(presence, done_ns, TS.serialize_cdr(_presence(frame), PRESENCE_TYPE))
                writer.write(grasps, done_ns, TS.serialize_cdr(_grasps(frame), GRASP_TYPE))
        if service_query is not None:
            header = _header(5)
            header.stamp.nanosec += PERIOD_NS // 2
            result = T["vlm_perception_msgs/msg/ObjectPresence"](
                header=header, query=service_query, present=False, confidence=0.02, threshold=0.1, count=0)
            answer = T[PRESENCE_TYPE](header=header, results=[result], backend="owlv2", inference_ms=40.0)
            writer.write(presence, T0_NS + 6 * PERIOD_NS, TS.serialize_cdr(answer, PRESENCE_TYPE))
    return path


@pytest.fixture(scope="module")
def run_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bag(tmp_path_factory.mktemp("bags") / "run")


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    return image


def _tile_frames(run: report.Run, analysis: report.Analysis) -> list[int]:
    return [(run.outputs[i].key[0] - T0_NS) // PERIOD_NS for i in analysis.tiles]


def test_analysis_picks_the_first_output_and_every_change(run_bag):
    run = report.load(run_bag)
    assert run.image_topic == COLOR_TOPIC and run.queries == ["apple", "banana"]
    analysis = report.analyse(run, max_frames=12)
    assert _tile_frames(run, analysis) == [1, 3, 4, 8, 9]
    assert [analysis.changes[i] for i in analysis.tiles[1:]] == [
        {"banana": (True, False)},
        {"apple": (False, True)},
        {"apple": (True, False)},
        {"banana": (False, True)},
    ]
    assert (analysis.not_shown, analysis.without_frame) == (0, 0)
    assert run.targets[(T0_NS + 4 * PERIOD_NS, "camera_color_optical_frame")] == [
        report.Target("apple", pytest.approx(0.85), (20.0, 14.0, 36.0, 30.0))
    ]


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_report_prints_the_changes_and_writes_both_pngs(tmp_path, capsys, storage):
    bag = write_bag(tmp_path / "run", storage)
    out = tmp_path / "out"
    assert report.main([str(bag), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if re.match(r"\s*\d+\.\d{3} ", line)}
    # Times from frame 0 (no output); first and last rows plus the four changes, '*' marks a change.
    assert rows == {
        "0.100": ["no", "0.02", "yes", "0.85"],
        "0.300": ["no", "0.02", "no", "0.02*"],
        "0.400": ["yes", "0.85*", "no", "0.02"],
        "0.800": ["no", "0.02*", "no", "0.02"],
        "0.900": ["no", "0.02", "yes", "0.85*"],
        "1.000": ["no", "0.02", "yes", "0.85"],
    }
    assert lines[1].split() == ["time", "s", "apple", "banana"]
    assert [line.strip() for line in lines if "..." in line] == [
        "... 1 row without a change",
        "... 3 rows without a change",
    ]
    assert "10 outputs, 4 rows without a change omitted; * = presence changed" in lines
    assert f"wrote {out / 'contact_sheet.png'}: 5 frames (4 where presence changed)" in lines

    plot = _png(out / "presence.png")
    assert plot.shape == (440, 1000, 3)  # 10 x (0.8 + 1.8 per query) inches at 100 dpi
    assert plot.std() > 10  # drawn, not blank
    sheet = _png(out / "contact_sheet.png")
    # 5 tiles: 4 columns, 2 rows of 400 px wide tiles, each 300 px of image + 60 px of caption.
    assert sheet.shape == (720, 1600, 3)
    red = (sheet[..., 2] > 200) & (sheet[..., 1] < 60) & (sheet[..., 0] < 60)
    assert red.sum() > 1000  # the apple block, on the frame where it appeared


def test_max_frames_caps_the_contact_sheet(run_bag, tmp_path, capsys):
    assert report.main([str(run_bag), "--out", str(tmp_path), "--max-frames", "2"]) == 0
    assert "3 more changes not shown; raise --max-frames to see them" in capsys.readouterr().out
    assert _png(tmp_path / "contact_sheet.png").shape == (360, 800, 3)  # 2 tiles in one row


def test_changes_without_a_recorded_frame_are_counted_not_drawn(tmp_path, capsys):
    bag = write_bag(tmp_path / "run", frames_not_recorded=frozenset({0, 3}))
    run = report.load(bag)
    analysis = report.analyse(run, max_frames=12)
    assert _tile_frames(run, analysis) == [1, 4, 8, 9] and analysis.without_frame == 1
    assert run.t0_ns == T0_NS + PERIOD_NS  # times count from the first recorded frame
    assert report.main([str(bag), "--out", str(tmp_path / "out")]) == 0
    assert f"1 change not shown: the source frame is not on {COLOR_TOPIC}" in capsys.readouterr().out


def test_default_output_directory_is_beside_the_bag(run_bag):
    assert report.main([str(run_bag)]) == 0
    assert (run_bag.parent / "run_report" / "contact_sheet.png").is_file()


def test_reads_the_message_definitions_stored_in_the_bag(run_bag, monkeypatch):
    monkeypatch.setattr(report, "installed_msg_types", lambda: None)  # a venv without the workspace
    run = report.load(run_bag)
    assert len(run.outputs) == FRAMES - 1 and run.queries == ["apple", "banana"]


@pytest.mark.parametrize(
    "kwargs, extra, message",
    [
        ({"outputs": False}, [], "no ~/presence outputs in {bag}; record with vlm_perception_replay --record"),
        ({"image_topics": ()}, [], "no sensor_msgs/msg/Image topic in {bag}"),
        (
            {"image_topics": ("/left/color/image_raw", "/right/color/image_raw")},
            [],
            "several Image topics in {bag} (/left/color/image_raw, /right/color/image_raw); "
            "choose the camera input with --image-topic",
        ),
        (
            {},
            ["--image-topic", "/camera/image"],
            "/camera/image is not a sensor_msgs/msg/Image topic in {bag}; its Image topics: " + COLOR_TOPIC,
        ),
    ],
    ids=["no-presence", "no-image", "two-cameras", "wrong-image-topic"],
)
def test_a_bag_that_cannot_be_reported_on_is_one_line_on_stderr(tmp_path, capsys, kwargs, extra, message):
    bag = write_bag(tmp_path / "run", StoragePlugin.SQLITE3, **kwargs)
    assert report.main([str(bag), "--out", str(tmp_path / "out"), *extra]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message.format(bag=bag) in captured.err
    assert not (tmp_path / "out").exists()


def test_choosing_one_of_two_cameras_and_a_missing_bag(tmp_path, capsys):
    topics = ("/left/color/image_raw", "/right/color/image_raw")
    bag = write_bag(tmp_path / "run", image_topics=topics)
    assert report.main([str(bag), "--out", str(tmp_path / "out"), "--image-topic", topics[1]]) == 0
    assert report.main([str(tmp_path / "nothing")]) == 1
    assert f"cannot read {tmp_path / 'nothing'}" in capsys.readouterr().err


def test_a_multi_camera_run_reports_only_the_chosen_camera(tmp_path, capsys):
    """A node with cameras [left, right] publishes ~/left/presence and ~/right/presence."""
    bag = tmp_path / "run"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for side, query in (("left", "apple"), ("right", "cup")):
            image = writer.add_connection(f"/{side}/color/image_raw", "sensor_msgs/msg/Image", typestore=TS)
            presence = writer.add_connection(f"/vlm_perception/{side}/presence", PRESENCE_TYPE, typestore=TS)
            for frame in range(FRAMES):
                header = _header(frame, f"{side}_optical")
                msg = _image(frame)
                msg.header = header
                writer.write(image, T0_NS + frame * PERIOD_NS, TS.serialize_cdr(msg, msg.__msgtype__))
                result = T["vlm_perception_msgs/msg/ObjectPresence"](
                    header=header, query=query, present=True, confidence=0.9, threshold=0.1, count=1)
                out = T[PRESENCE_TYPE](header=header, results=[result], backend="owlv2", inference_ms=1.0)
                writer.write(presence, T0_NS + frame * PERIOD_NS + 1, TS.serialize_cdr(out, PRESENCE_TYPE))
    run = report.load(bag, "/right/color/image_raw")
    assert run.queries == ["cup"] and run.presence_topics == ["/vlm_perception/right/presence"]
    assert len(run.outputs) == FRAMES
    assert report.main([str(bag), "--out", str(tmp_path / "out"), "--image-topic", "/left/color/image_raw"]) == 0
    printed = capsys.readouterr().out
    assert "/vlm_perception/left/presence" in printed and "/vlm_perception/right/presence" not in printed
    assert "apple" in printed and "cup" not in printed
