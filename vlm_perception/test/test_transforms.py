import math

import pytest

from vlm_perception.core.transforms import quaternion_multiply, rotate, transform_pose

QUARTER_TURN_Z = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))


def test_rotate_quarter_turn_about_z():
    assert rotate(QUARTER_TURN_Z, (1.0, 0.0, 0.0)) == pytest.approx((0.0, 1.0, 0.0))


def test_two_quarter_turns_make_a_half_turn():
    half = quaternion_multiply(QUARTER_TURN_Z, QUARTER_TURN_Z)
    assert rotate(half, (1.0, 2.0, 3.0)) == pytest.approx((-1.0, -2.0, 3.0))


def test_transform_pose_rotates_then_translates_and_composes_orientation():
    # Camera frame A sits 1 m above B's origin, turned a quarter about z.
    position, orientation = transform_pose((0.0, 0.0, 1.0), QUARTER_TURN_Z, (0.5, 0.0, 0.2), QUARTER_TURN_Z)
    assert position == pytest.approx((0.0, 0.5, 1.2))
    assert rotate(orientation, (1.0, 0.0, 0.0)) == pytest.approx((-1.0, 0.0, 0.0))
