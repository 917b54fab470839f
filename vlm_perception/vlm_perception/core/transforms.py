"""Rigid transforms of poses, ROS-free (quaternions as x, y, z, w).

Used to express grasp poses in `target_frame` once tf2 has looked up the
camera-to-target transform; tf2_geometry_msgs is not needed for this.
"""
from __future__ import annotations

from typing import Tuple

Vector = Tuple[float, float, float]
Quaternion = Tuple[float, float, float, float]


def quaternion_multiply(a: Quaternion, b: Quaternion) -> Quaternion:
    """The rotation b followed by a (Hamilton product a * b)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def rotate(q: Quaternion, v: Vector) -> Vector:
    """v rotated by the unit quaternion q."""
    x, y, z, _ = quaternion_multiply(quaternion_multiply(q, (v[0], v[1], v[2], 0.0)), (-q[0], -q[1], -q[2], q[3]))
    return (x, y, z)


def transform_pose(translation: Vector, rotation: Quaternion, position: Vector,
                   orientation: Quaternion) -> tuple[Vector, Quaternion]:
    """A pose given in frame A, expressed in frame B, for the transform that maps A into B."""
    rotated = rotate(rotation, position)
    moved = (rotated[0] + translation[0], rotated[1] + translation[1], rotated[2] + translation[2])
    return moved, quaternion_multiply(rotation, orientation)
