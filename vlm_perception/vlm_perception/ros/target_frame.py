"""Grasp poses re-expressed in `target_frame` through tf2, where tf2_ros exists.

tf2_ros ships with every ROS 2 install but not with the PyPI wheels; without
it a non-empty `target_frame` is refused at start-up (see TF2_MISSING).
"""
from __future__ import annotations

from typing import Any

from geometry_msgs.msg import Point, Pose, PoseArray, Quaternion
from rclpy.duration import Duration
from rclpy.time import Time

from ..core.errors import ConfigurationError, VlmPerceptionError
from ..core.transforms import transform_pose

try:
    import tf2_ros
except ImportError:  # PyPI wheels: no tf2
    tf2_ros = None

TF2_MISSING = (
    "target_frame is set but tf2_ros is not installed (it comes with a ROS 2 install, not with the "
    "PyPI wheels); leave target_frame empty and transform ~/grasp_poses yourself"
)
LOOKUP_TIMEOUT_S = 0.1


class TargetFrameTransformer:
    def __init__(self, node: Any, target_frame: str) -> None:
        if tf2_ros is None:
            raise ConfigurationError(TF2_MISSING)
        self.target_frame = target_frame
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)

    def transform(self, poses: PoseArray) -> PoseArray:
        """The poses in target_frame, at the image's stamp; VlmPerceptionError when tf cannot tell."""
        try:
            stamped = self._buffer.lookup_transform(
                self.target_frame, poses.header.frame_id, Time.from_msg(poses.header.stamp),
                timeout=Duration(seconds=LOOKUP_TIMEOUT_S))
        except tf2_ros.TransformException as exc:
            raise VlmPerceptionError(
                f"no transform from '{poses.header.frame_id}' to target_frame '{self.target_frame}': {exc}") from exc
        t, r = stamped.transform.translation, stamped.transform.rotation
        moved = PoseArray(header=stamped.header)
        moved.header.frame_id = self.target_frame
        for pose in poses.poses:
            p, q = pose.position, pose.orientation
            (x, y, z), (qx, qy, qz, qw) = transform_pose(
                (t.x, t.y, t.z), (r.x, r.y, r.z, r.w), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
            moved.poses.append(Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw)))
        return moved
