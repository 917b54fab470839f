"""vlm_perception_sample_bag: a small synthetic bin-picking rosbag2 with ground truth and labels.

    vlm_perception_sample_bag OUT [--seconds 10] [--rate 10] [--storage mcap|sqlite3] [--scene photos|shapes]

OUT (a new directory) becomes a rosbag2 with, per frame, all with the same
header (stamp, frame_id `camera_color_optical_frame`) and bag timestamp:

- `/camera/color/camera_info`  sensor_msgs/CameraInfo (K: fx = fy = 280, centred)
- `/camera/depth/image_raw`    sensor_msgs/Image 16UC1, millimetres, aligned to color
- `/camera/color/image_raw`    sensor_msgs/Image rgb8, 320x240

written in that order, so a node has the depth and intrinsics of a frame by
the time its color image arrives. Seen from above: a grey bin (rim at 850 mm,
floor at 1000 mm) on a table (1150 mm). Stamps start at 2024-01-01T00:00:00Z,
so a regenerated bag is identical. The scene in the bin:

- `photos` (default): real photographs from scikit-image's data set, which
  the offline backend's ImageNet classifier recognises: a `cat` (chelsea)
  from the start until 60% of the bag, a `cup of coffee` (coffee) put in at
  20%, sliding right and taken out at 90%, and a `rocket` (rocket) from 35%
  to 80%. Each lies flat, its top 100, 80 and 60 mm above the floor.
- `shapes`: objects drawn in the exact colours the test backend
  `plugin_backends.ColorBackend` looks for, with scikit-image's `coffee`
  photo lying on the floor as texture: an `apple` (a dome, 60 mm high) the
  whole time, a `banana` (flat, 35 mm) from half-way, and a `cup` (160 mm
  tall, clearing the rim) that slides to the right and has left the image
  after three quarters of the bag.

OUT/labels.yaml gives, per object, when it is in view, in the format
`vlm_perception_report --labels` reads (see vlm_perception.bag.labels).
Ground truth goes to OUT/ground_truth.json:

    {
      "scene": "shapes", "width": 320, "height": 240, "rate_hz": 10.0, "frame_id": "camera_color_optical_frame",
      "topics": {"image": "/camera/color/image_raw", "depth": "...", "camera_info": "..."},
      "objects": ["apple", "banana", "cup"],
      "colors": {"apple": [220, 20, 20], ...},            # RGB, shapes scene only
      "frames": [                                         # one per color image, in time order
        {"stamp": {"sec": 1704067200, "nanosec": 0}, "stamp_ns": 1704067200000000000,
         "objects": {
           "apple": {"present": true, "box": [x0, y0, x1, y1], "top_depth_mm": 940},
           "cup":   {"present": false, "box": null, "top_depth_mm": null}, ...}},
        ...]
    }

`box` is in pixels, x1 and y1 exclusive: the extent of the object's pixels
in the image (clipped where it leaves the image), as ColorBackend reports it.
`top_depth_mm` is the smallest depth on the object. MCAP bags are
zstd-compressed per chunk, sqlite3 bags per message: 10 s at 10 Hz of the
shapes scene take 0.6 MB and 1.8 MB.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from skimage import data as skimage_data

from ..core.errors import ReplayError
from ..core.images import encode_image_fields
from .cli_args import positive
from .labels import dump_labels

COLOR_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
FRAME_ID = "camera_color_optical_frame"
GROUND_TRUTH_NAME = "ground_truth.json"
LABELS_NAME = "labels.yaml"
SCENES = ("photos", "shapes")
WIDTH, HEIGHT = 320, 240
FOCAL_PX = 280.0
START_NS = 1_704_067_200 * 10**9  # fixed, so regenerated bags and their ground truth are identical
TABLE_MM, RIM_MM, FLOOR_MM = 1150, 850, 1000
# Exactly the colours of plugin_backends.ColorBackend (the tests' deterministic backend).
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "apple": (220, 20, 20), "banana": (240, 220, 30), "cup": (30, 60, 220)}
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# sqlite3 has no storage-side compression in rosbags; per-message zstd keeps it small too.
COMPRESSION = {"mcap": CompressionMode.STORAGE, "sqlite3": CompressionMode.MESSAGE}

_BIN_OUTER = (8, 8, 252, 232)  # x0, y0, x1, y1 (exclusive)
_BIN_FLOOR = (20, 20, 240, 220)
_PHOTO_BOX = (24, 162, 104, 216)
_CUP_RADIUS = 20


@dataclass(frozen=True)
class SceneObject:
    """How one object is drawn at a point in the bag (progress 0..1)."""

    name: str
    draw: Callable[[np.ndarray, float], None]  # paints 255 into a uint8 mask
    height_mm: Callable[[np.ndarray], np.ndarray]  # mask -> height above the floor per masked pixel
    visible: Callable[[float], bool]


def _draw_apple(mask: np.ndarray, _progress: float) -> None:
    cv2.circle(mask, (70, 80), 24, 255, thickness=-1, lineType=cv2.LINE_8)


def _apple_height(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    r2 = ((xs - 70) ** 2 + (ys - 80) ** 2) / 24.0**2
    return 60.0 * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))


def _draw_banana(mask: np.ndarray, _progress: float) -> None:
    cv2.ellipse(mask, (165, 175), (42, 13), -15, 0, 360, 255, thickness=-1, lineType=cv2.LINE_8)


def _cup_x(progress: float) -> float:
    # Slides right from x=150 and is fully out of the 320 px image at progress 0.75.
    return 150.0 + (WIDTH + _CUP_RADIUS - 150.0) * progress / 0.75


def _draw_cup(mask: np.ndarray, progress: float) -> None:
    cv2.circle(mask, (round(_cup_x(progress)), 125), _CUP_RADIUS, 255, thickness=-1, lineType=cv2.LINE_8)


def _flat(height: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda mask: np.full(np.count_nonzero(mask), height)


SCENE = (
    SceneObject("apple", _draw_apple, _apple_height, lambda p: True),
    SceneObject("banana", _draw_banana, _flat(35.0), lambda p: p >= 0.5),
    SceneObject("cup", _draw_cup, _flat(160.0), lambda p: _cup_x(p) - _CUP_RADIUS < WIDTH),
)


def _photo() -> np.ndarray:
    x0, y0, x1, y1 = _PHOTO_BOX
    return cv2.resize(skimage_data.coffee(), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)


def _draw_bin(outer: tuple[int, int, int, int], floor: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """RGB and depth of the table with the empty bin on it."""
    rgb = np.full((HEIGHT, WIDTH, 3), 70, np.uint8)
    depth = np.full((HEIGHT, WIDTH), TABLE_MM, np.uint16)
    x0, y0, x1, y1 = outer
    rgb[y0:y1, x0:x1], depth[y0:y1, x0:x1] = 150, RIM_MM
    x0, y0, x1, y1 = floor
    rgb[y0:y1, x0:x1], depth[y0:y1, x0:x1] = 110, FLOOR_MM
    return rgb, depth


def render_frame(progress: float, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The shapes scene: RGB (H, W, 3) uint8, depth (H, W) uint16 mm and the ground truth of each object."""
    rgb, depth = _draw_bin(_BIN_OUTER, _BIN_FLOOR)
    x0, y0, x1, y1 = _PHOTO_BOX
    rgb[y0:y1, x0:x1] = photo
    truth: dict[str, Any] = {}
    for obj in SCENE:
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        if obj.visible(progress):
            obj.draw(mask, progress)
        inside = mask > 0
        if not inside.any():
            truth[obj.name] = {"present": False, "box": None, "top_depth_mm": None}
            continue
        rgb[inside] = OBJECT_COLORS[obj.name]
        depth[inside] = np.round(FLOOR_MM - obj.height_mm(inside)).astype(np.uint16)
        ys, xs = np.nonzero(inside)
        truth[obj.name] = {"present": True,
                           "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                           "top_depth_mm": int(depth[inside].min())}
    return rgb, depth, truth


# --- the photos scene: real photographs the offline backend's ImageNet classifier knows ------

_WIDE_BIN_OUTER = (8, 8, 312, 232)
_WIDE_BIN_FLOOR = (20, 20, 300, 220)


@dataclass(frozen=True)
class PhotoObject:
    """A photo lying in the bin: put in, moved and taken out over the bag (progress 0..1)."""

    name: str  # the phrase that finds it, e.g. the demo's standing query
    load: Callable[[], np.ndarray]  # scikit-image's loader of the photo
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 of the photo that shows the object
    size: tuple[int, int]  # width, height in the image
    height_mm: float  # how far its top stands above the bin floor
    place: Callable[[float], Optional[tuple[int, int]]]  # top-left corner at a progress; None: not in the bin

    def picture(self) -> np.ndarray:
        x0, y0, x1, y1 = self.crop
        return cv2.resize(self.load()[y0:y1, x0:x1], self.size, interpolation=cv2.INTER_AREA)


def _between(start: float, stop: float, corner: Callable[[float], tuple[int, int]]):
    """In the bin for start <= progress < stop, at corner(progress)."""
    return lambda p: corner(p) if start <= p < stop else None


# The cat and the rocket lie along the top, the coffee slides along the bottom left, never under the
# rocket. Sizes and places keep each photo's score from the offline backend above 0.5 (threshold 0.4):
# the classifier's grid views are sensitive to a few pixels of placement (the rocket 10 px further
# right scores 0.45 instead of 0.7).
PHOTO_SCENE = (
    PhotoObject("cat", skimage_data.chelsea, (50, 0, 400, 300), (105, 90), 100.0,
                _between(0.0, 0.6, lambda p: (24, 22))),
    PhotoObject("cup of coffee", skimage_data.coffee, (150, 0, 550, 400), (104, 104), 80.0,
                _between(0.2, 0.9, lambda p: (round(40 + 50 * (p - 0.2) / 0.7), 114))),
    PhotoObject("rocket", skimage_data.rocket, (230, 60, 410, 427), (50, 100), 60.0,
                _between(0.35, 0.8, lambda p: (200, 22))),
)


def render_photo_frame(progress: float, pictures: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray,
                                                                                   dict[str, Any]]:
    """The photos scene at `progress`: RGB, depth in mm and each object's ground truth (as render_frame)."""
    rgb, depth = _draw_bin(_WIDE_BIN_OUTER, _WIDE_BIN_FLOOR)
    truth: dict[str, Any] = {}
    for obj in PHOTO_SCENE:
        corner = obj.place(progress)
        if corner is None:
            truth[obj.name] = {"present": False, "box": None, "top_depth_mm": None}
            continue
        (x0, y0), (w, h) = corner, obj.size
        rgb[y0:y0 + h, x0:x0 + w] = pictures[obj.name]
        top = round(FLOOR_MM - obj.height_mm)
        depth[y0:y0 + h, x0:x0 + w] = top
        truth[obj.name] = {"present": True, "box": [x0, y0, x0 + w, y0 + h], "top_depth_mm": top}
    return rgb, depth, truth


def _scene_renderer(scene: str) -> tuple[list[str], Callable[[float], tuple[np.ndarray, np.ndarray, dict[str, Any]]]]:
    """The object names and a progress -> (rgb, depth, truth) function of a scene."""
    if scene == "shapes":
        photo = _photo()
        return [obj.name for obj in SCENE], lambda p: render_frame(p, photo)
    pictures = {obj.name: obj.picture() for obj in PHOTO_SCENE}
    return [obj.name for obj in PHOTO_SCENE], lambda p: render_photo_frame(p, pictures)


def present_intervals(frames: list[dict[str, Any]], name: str, rate_hz: float) -> list[tuple[float, Optional[float]]]:
    """Seconds from the first frame, [start, end), when `name` is present; end None: to the end."""
    intervals: list[tuple[float, Optional[float]]] = []
    start: Optional[float] = None
    for index, frame in enumerate(frames):
        present = frame["objects"][name]["present"]
        if present and start is None:
            start = round(index / rate_hz, 6)
        elif not present and start is not None:
            intervals.append((start, round(index / rate_hz, 6)))
            start = None
    if start is not None:
        intervals.append((start, None))
    return intervals


class _Messages:
    """CDR serialisation of the three camera messages with rosbags' Jazzy typestore."""

    def __init__(self) -> None:
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self._types = self.typestore.types

    def header(self, stamp_ns: int) -> Any:
        stamp = self._types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return self._types["std_msgs/msg/Header"](stamp=stamp, frame_id=FRAME_ID)

    def image(self, header: Any, array: np.ndarray, encoding: str) -> bytes:
        fields = encode_image_fields(array, encoding)
        fields["data"] = np.frombuffer(fields["data"], np.uint8)
        msg = self._types["sensor_msgs/msg/Image"](header=header, **fields)
        return bytes(self.typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    def camera_info(self, header: Any) -> bytes:
        cx, cy = (WIDTH - 1) / 2.0, (HEIGHT - 1) / 2.0
        roi = self._types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        msg = self._types["sensor_msgs/msg/CameraInfo"](
            header=header, height=HEIGHT, width=WIDTH, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([FOCAL_PX, 0, cx, 0, FOCAL_PX, cy, 0, 0, 1], float),
            r=np.eye(3).reshape(-1),
            p=np.array([FOCAL_PX, 0, cx, 0, 0, FOCAL_PX, cy, 0, 0, 0, 1, 0], float),
            binning_x=0, binning_y=0, roi=roi)
        return bytes(self.typestore.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo"))


def write_sample_bag(out: Path, seconds: float = 10.0, rate_hz: float = 10.0, storage: str = "mcap",
                     scene: str = "photos") -> Path:
    """Write the sample bag to the new directory `out` with its ground truth and labels; returns `out`."""
    frames = round(seconds * rate_hz)
    if frames < 1 or rate_hz <= 0:
        raise ReplayError(f"--seconds {seconds} at --rate {rate_hz} Hz gives no frame; use positive values")
    if storage not in STORAGES:
        raise ReplayError(f"unknown storage {storage!r}; use one of {', '.join(STORAGES)}")
    if scene not in SCENES:
        raise ReplayError(f"unknown scene {scene!r}; use one of {', '.join(SCENES)}")
    out = Path(out)
    messages = _Messages()
    names, render = _scene_renderer(scene)
    truth_frames = []
    if out.exists():
        raise ReplayError(f"{out} exists already; choose a new directory for the bag")
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    writer.set_compression(COMPRESSION[storage], CompressionFormat.ZSTD)
    with writer:
        types = ("sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/Image", "sensor_msgs/msg/Image")
        info_conn, depth_conn, color_conn = (
            writer.add_connection(topic, msgtype, typestore=messages.typestore)
            for topic, msgtype in zip((INFO_TOPIC, DEPTH_TOPIC, COLOR_TOPIC), types))
        for index in range(frames):
            stamp_ns = START_NS + round(index * 1e9 / rate_hz)
            rgb, depth, truth = render(index / frames)
            header = messages.header(stamp_ns)
            writer.write(info_conn, stamp_ns, messages.camera_info(header))
            writer.write(depth_conn, stamp_ns, messages.image(header, depth, "16UC1"))
            writer.write(color_conn, stamp_ns, messages.image(header, rgb, "rgb8"))
            truth_frames.append({"stamp": {"sec": stamp_ns // 10**9, "nanosec": stamp_ns % 10**9},
                                 "stamp_ns": stamp_ns, "objects": truth})
    ground_truth: dict[str, Any] = {
        "scene": scene, "width": WIDTH, "height": HEIGHT, "rate_hz": rate_hz, "frame_id": FRAME_ID,
        "topics": {"image": COLOR_TOPIC, "depth": DEPTH_TOPIC, "camera_info": INFO_TOPIC},
        "objects": names,
    }
    if scene == "shapes":
        ground_truth["colors"] = {name: list(color) for name, color in OBJECT_COLORS.items()}
    ground_truth["frames"] = truth_frames
    (out / GROUND_TRUTH_NAME).write_text(json.dumps(ground_truth, indent=1))
    (out / LABELS_NAME).write_text(
        f"# When each object is in view: vlm_perception_report RUN --labels {LABELS_NAME}\n"
        + dump_labels("relative", {name: present_intervals(truth_frames, name, rate_hz) for name in names}))
    return out


def load_ground_truth(bag: Path) -> dict[str, Any]:
    """The ground truth written next to a sample bag's messages (format in the module docstring)."""
    return json.loads((Path(bag) / GROUND_TRUTH_NAME).read_text())


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vlm_perception_sample_bag", description=__doc__.split("\n\n")[0],
        epilog="Replay it with: vlm_perception_replay OUT")
    parser.add_argument("out", type=Path, metavar="OUT", help="new directory for the bag")
    parser.add_argument("--seconds", type=positive, default=10.0, help="length of the bag (default 10)")
    parser.add_argument("--rate", type=positive, default=10.0, help="frames per second (default 10)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap",
                        help="storage format (default mcap)")
    parser.add_argument("--scene", choices=SCENES, default="photos",
                        help="photos: photographs the offline backend knows (default); shapes: flat colours "
                             "for the tests' colour-matching backend")
    args = parser.parse_args(argv)
    try:
        out = write_sample_bag(args.out, args.seconds, args.rate, args.storage, args.scene)
    except ReplayError as exc:
        print(f"vlm_perception_sample_bag: {exc}", file=sys.stderr)
        return 1
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({round(args.seconds * args.rate)} frames, {size_mb:.1f} MB), "
          f"ground truth in {out / GROUND_TRUTH_NAME}, labels in {out / LABELS_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
