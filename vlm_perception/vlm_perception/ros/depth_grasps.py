"""Pairs color frames with depth and camera_info, and turns 2D boxes into grasps.

Ingest only stores messages (cheap checks included); depth is converted to
metres once per depth frame, on the first grasp that needs it.
"""
from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

import numpy as np

from ..core import images
from ..backends.base import Box
from ..core.errors import GraspError, VlmPerceptionError
from ..core.frames import LatestFrame, StampedBuffer, StampedMsg
from ..core.grasping import DEPTH_ENCODINGS, CameraIntrinsics, Grasp, compute_grasp, depth_msg_to_metres, no_pose
from ..core.pairing import ColorPick, depth_is_live, pick_color


class DepthGrasper:
    def __init__(self, depth_topic: str, info_topic: str, capacity: int = 30) -> None:
        self.depth_topic = depth_topic
        self.info_topic = info_topic
        self._depth = StampedBuffer(capacity)
        self._info: Optional[CameraIntrinsics] = None
        # The last conversion, held with its source message so identity checks cannot go stale.
        self._metres_for: Optional[tuple[Any, float]] = None
        self._metres: Optional[np.ndarray] = None
        self._lock = threading.Lock()

    def put_depth(self, stamp_ns: int, msg: Any) -> None:
        """Store a depth frame; ImageError/GraspError for one that can never be used."""
        if msg.encoding not in DEPTH_ENCODINGS:
            raise GraspError(
                f"unsupported depth encoding '{msg.encoding}'; publish {' or '.join(DEPTH_ENCODINGS)} (REP 118)")
        images.check_image_msg(msg)
        self._depth.put(stamp_ns, msg)

    def put_camera_info(self, msg: Any) -> None:
        """Keep the latest valid intrinsics; GraspError for an uncalibrated CameraInfo."""
        self._info = CameraIntrinsics.from_camera_info(msg)

    def depth_is_live(self) -> bool:
        """Whether depth is being received (core.pairing)."""
        return depth_is_live(self._depth)

    def pick_color(self, colors: LatestFrame, sync_slop_s: float) -> Optional[ColorPick]:
        """The color frame to evaluate with depth (core.pairing); may wait up to sync_slop for its depth."""
        return pick_color(colors, self._depth, sync_slop_s)

    def grasps(self, stamp_ns: int, color_hw: tuple[int, int], boxes: Sequence[Box], sync_slop_s: float,
               depth_scale: float, margin: float, depth_wait_ran_out: bool = False) -> list[Grasp]:
        """One grasp per box, or a pose-less Grasp whose status says what is missing;
        `depth_wait_ran_out`: the image's depth was waited for (pick_color) and did not come."""
        if not boxes:
            return []
        depth = self._depth.closest(stamp_ns)
        info = self._info
        if depth is None:
            return [no_pose(f"no depth received on {self.depth_topic}")] * len(boxes)
        if info is None:
            return [no_pose(f"no camera_info received on {self.info_topic}")] * len(boxes)
        offset_s = abs(depth.stamp_ns - stamp_ns) / 1e9
        if offset_s > sync_slop_s:
            status = f"no depth frame within sync_slop {sync_slop_s:g} s of the image (closest {offset_s:.3f} s)"
            if depth_wait_ran_out:
                status += f"; waited {sync_slop_s:g} s past the image's arrival for it"
            return [no_pose(status)] * len(boxes)
        try:
            metres = self._metres_of(depth, depth_scale)
            height, width = metres.shape
            if (info.width, info.height) != (width, height):
                info = info.scaled(width, height)
            return [compute_grasp(metres, info, box, color_hw, margin) for box in boxes]
        except VlmPerceptionError as exc:
            return [no_pose(str(exc))] * len(boxes)

    def _metres_of(self, depth: StampedMsg, depth_scale: float) -> np.ndarray:
        with self._lock:
            cached = self._metres_for
            if cached is None or cached[0] is not depth.msg or cached[1] != depth_scale or self._metres is None:
                self._metres = depth_msg_to_metres(depth.msg, depth_scale)
                self._metres_for = (depth.msg, depth_scale)
            return self._metres
