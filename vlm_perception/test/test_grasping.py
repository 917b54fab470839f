"""Grasp poses on ray-cast scenes whose answers are known analytically.

Each scene is a table plane with a cuboid lying on it, rendered exactly by
intersecting every pixel's ray K^-1 [u, v, 1] with the planes and the
cuboid's slabs; the detector box is the projection of the cuboid's corners.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from vlm_perception.core.errors import GraspError
from vlm_perception.core.grasping import (
    DEPTH_ENCODINGS,
    CameraIntrinsics,
    Grasp,
    compute_grasp,
    depth_msg_to_metres,
    depth_to_metres,
    no_pose,
    quaternion_from_matrix,
)
from vlm_perception.core.images import encode_image_fields

K640 = CameraIntrinsics(fx=600.0, fy=600.0, cx=319.5, cy=239.5, width=640, height=480)
MARGIN = 0.01
AWAY = np.array([0.0, 0.0, 1.0])


def rot_x(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_z(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pixel_rays(k: CameraIntrinsics) -> np.ndarray:
    """(H, W, 3) rays with z = 1 through every pixel centre (integer K coordinates)."""
    u, v = np.meshgrid(np.arange(k.width), np.arange(k.height))
    return np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones(u.shape)], axis=-1)


def matrix_from_quaternion(q: tuple[float, float, float, float]) -> np.ndarray:
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


@dataclass(frozen=True)
class Scene:
    """A table (normal pointing away from the camera) with a cuboid lying on it.

    The cuboid's frame is `rotation`: its z axis is the table normal, and
    half_extents are its half sizes along its own x, y, z.
    """

    table_point: np.ndarray
    rotation: np.ndarray
    offset: tuple[float, float]  # cuboid centre on the table, along rotation's x and y
    half_extents: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        return self.rotation[:, 2]

    @property
    def centre(self) -> np.ndarray:
        on_table = self.table_point + self.rotation @ np.array([*self.offset, 0.0])
        return on_table - self.normal * self.half_extents[2]  # towards the camera

    @property
    def top_centre(self) -> np.ndarray:
        return self.centre - self.normal * self.half_extents[2]

    @property
    def narrow_axis(self) -> np.ndarray:
        return self.rotation[:, int(np.argmin(self.half_extents[:2]))]

    @property
    def narrow_width(self) -> float:
        return 2.0 * float(np.min(self.half_extents[:2]))

    def top_point_under(
        self, box: tuple[float, float, float, float], k: CameraIntrinsics = K640
    ) -> np.ndarray:
        """Where the ray through the box centre meets the top face's plane."""
        u = (box[0] + box[2]) / 2 - 0.5  # edge -> K coordinates
        v = (box[1] + box[3]) / 2 - 0.5
        ray = np.array([(u - k.cx) / k.fx, (v - k.cy) / k.fy, 1.0])
        return ray * (self.normal @ self.top_centre) / (self.normal @ ray)

    def render(self, k: CameraIntrinsics) -> np.ndarray:
        """float32 depth (z) in metres; NaN where a ray hits nothing."""
        rays = pixel_rays(k)
        with np.errstate(divide="ignore", invalid="ignore"):
            table = (self.normal @ self.table_point) / (rays @ self.normal)
            table[table <= 0] = np.inf
            # Slab test in the cuboid's frame; the camera sits at the origin.
            origin = -self.rotation.T @ self.centre
            directions = rays @ self.rotation
            t1 = (-self.half_extents - origin) / directions
            t2 = (self.half_extents - origin) / directions
            near = np.fmax.reduce(np.fmin(t1, t2), axis=-1)
            far = np.fmin.reduce(np.fmax(t1, t2), axis=-1)
        cuboid = np.where((near <= far) & (near > 0), near, np.inf)
        depth = np.minimum(table, cuboid)  # rays have z = 1, so t is the depth
        depth[~np.isfinite(depth)] = np.nan
        return depth.astype(np.float32)

    def box(
        self, k: CameraIntrinsics = K640, pad: float = 1.0, top_only: bool = False
    ) -> tuple[float, float, float, float]:
        """The detector's box: the cuboid's projected corners, in edge coordinates, plus pad px.

        top_only bounds only the top face's corners, leaving out a side face
        that a tilted view shows: that side face moves the box centre, and
        with it the grasp point, off the top face's centre.
        """
        signs = np.array([
            [sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in ((-1,) if top_only else (-1, 1))
        ])
        corners = self.centre + (signs * self.half_extents) @ self.rotation.T
        u = corners[:, 0] / corners[:, 2] * k.fx + k.cx + 0.5  # +0.5: K -> edge coordinates
        v = corners[:, 1] / corners[:, 2] * k.fy + k.cy + 0.5
        return (u.min() - pad, v.min() - pad, u.max() + pad, v.max() + pad)


FLAT = Scene(np.array([0.0, 0.0, 0.8]), np.eye(3), (0.06, -0.04), np.array([0.03, 0.02, 0.015]))
# The same box turned by 90 degrees, so its narrow side runs along image x.
FLAT_TURNED = Scene(FLAT.table_point, rot_z(90.0), FLAT.offset, FLAT.half_extents)
TILTED = Scene(np.array([0.0, 0.0, 0.8]), rot_x(30.0), (0.04, 0.03), np.array([0.03, 0.02, 0.015]))
# A large tray: a half-invalid central region biases its median depth by centimetres.
TILTED_TRAY = Scene(TILTED.table_point, TILTED.rotation, (0.0, 0.0), np.array([0.15, 0.1, 0.015]))
# The 30-degree view shows 7.5 mm of a side face, which would shift the grasp point by ~8 mm.
TILTED_BOX = TILTED.box(top_only=True)


def rotation_of(grasp: Grasp) -> np.ndarray:
    """The grasp's rotation, after checking it is proper and faces away from the camera."""
    assert grasp.has_pose
    q = np.array(grasp.orientation)
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-9)
    r = matrix_from_quaternion(grasp.orientation)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-9)
    assert r[:, 2] @ np.array(grasp.position) > 0, "approach must point away from the camera"
    return r


def assert_matches(
    grasp: Grasp, scene: Scene, position_tol: float = 0.005, position: np.ndarray | None = None
) -> None:
    """Position within tolerance of `position` (default: the top face's centre), axes as the scene's."""
    r = rotation_of(grasp)
    expected = scene.top_centre if position is None else position
    assert np.linalg.norm(np.array(grasp.position) - expected) < position_tol
    assert angle_deg(r[:, 2], scene.normal) < 2.0
    # The gripper closes along x, so its sign does not matter.
    assert angle_deg(r[:, 0], scene.narrow_axis) < 3.0 or angle_deg(-r[:, 0], scene.narrow_axis) < 3.0


@pytest.mark.parametrize("scene", [FLAT, FLAT_TURNED], ids=["narrow-along-y", "narrow-along-x"])
def test_box_on_flat_table(scene: Scene) -> None:
    depth = scene.render(K640)
    assert np.nanmin(depth) == pytest.approx(0.77, abs=1e-6)  # the box's top face

    grasp = compute_grasp(depth, K640, scene.box(), margin=MARGIN)

    assert grasp.status == ""
    assert_matches(grasp, scene)
    assert angle_deg(rotation_of(grasp)[:, 2], AWAY) < 2.0
    assert grasp.grasp_width == pytest.approx(scene.narrow_width + MARGIN, abs=0.005)


def test_box_on_tilted_table() -> None:
    depth = TILTED.render(K640)

    grasp = compute_grasp(depth, K640, TILTED_BOX, margin=MARGIN)

    assert grasp.status == ""
    assert_matches(grasp, TILTED)
    assert angle_deg(rotation_of(grasp)[:, 2], AWAY) == pytest.approx(30.0, abs=2.0)


def test_tilted_box_with_visible_side_face() -> None:
    """The detector's box includes the side face the tilt shows; part of it is in the central region.

    The side face must not tilt the approach. The box centre is no longer the
    top face's centre, so the grasp point only has to lie on the top face.
    """
    grasp = compute_grasp(TILTED.render(K640), K640, TILTED.box(), margin=MARGIN)

    r = rotation_of(grasp)
    assert grasp.status == ""
    assert angle_deg(r[:, 2], TILTED.normal) < 2.0
    assert angle_deg(r[:, 0], TILTED.narrow_axis) < 3.0
    local = TILTED.rotation.T @ (np.array(grasp.position) - TILTED.top_centre)
    assert abs(local[2]) < 0.001  # on the top face's plane...
    assert np.all(np.abs(local[:2]) < TILTED.half_extents[:2])  # ...and inside it


@pytest.mark.parametrize(
    "scene, half",
    [(FLAT, "left"), (TILTED, "top"), (TILTED_TRAY, "top")],
    ids=["flat-left-nan", "tilted-top-nan", "tilted-tray-top-nan"],
)
def test_half_of_central_region_invalid(scene: Scene, half: str) -> None:
    depth = scene.render(K640)
    x0, y0, x1, y1 = scene.box(top_only=scene is not FLAT)
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    if half == "left":
        depth[:, :cx] = np.nan
    else:
        # On the tilted table the remaining half's median depth is biased;
        # the plane fit has to correct it.
        depth[:cy, :] = np.nan

    box = (x0, y0, x1, y1)

    grasp = compute_grasp(depth, K640, box, margin=MARGIN)

    assert grasp.status == ""
    # Perspective moves a large tilted face's centre off the box centre, so
    # compare with the face's point under the box centre, which the whole
    # central region would give.
    assert_matches(grasp, scene, position_tol=0.001, position=scene.top_point_under(box))


def test_flying_pixels_are_rejected() -> None:
    depth = FLAT.render(K640)
    box = FLAT.box()
    x0, y0, x1, y1 = (int(c) for c in box)
    rng = np.random.default_rng(0)
    region = depth[y0:y1, x0:x1]
    spikes = rng.random(region.shape) < 0.1
    region[spikes] = rng.uniform(0.2, 3.0, int(spikes.sum()))

    grasp = compute_grasp(depth, K640, box, margin=MARGIN)

    assert grasp.status == ""
    assert_matches(grasp, FLAT, position_tol=0.002)


def test_no_valid_depth_in_box() -> None:
    raw = np.full((480, 640), 800, np.uint16)
    raw[200:300, 250:400] = 0
    depth = depth_to_metres(raw, "16UC1")

    grasp = compute_grasp(depth, K640, (260, 210, 390, 290))

    assert not grasp.has_pose
    assert grasp.status == "no valid depth in box"


def test_box_outside_depth_image() -> None:
    grasp = compute_grasp(FLAT.render(K640), K640, (700, 500, 800, 600))
    assert grasp == no_pose("box outside the depth image")
    assert grasp.status == "box outside the depth image"


def test_depth_at_half_the_color_resolution() -> None:
    k320 = K640.scaled(320, 240)
    depth = FLAT.render(k320)

    grasp = compute_grasp(depth, k320, FLAT.box(K640), color_size=(480, 640), margin=MARGIN)
    full = compute_grasp(FLAT.render(K640), K640, FLAT.box(K640), margin=MARGIN)

    assert grasp.status == ""
    assert_matches(grasp, FLAT)
    np.testing.assert_allclose(grasp.position, full.position, atol=0.003)
    assert grasp.grasp_width == pytest.approx(full.grasp_width, abs=1e-9)


def test_scaled_intrinsics_keep_pixel_edges() -> None:
    k320 = K640.scaled(320, 240)
    assert (k320.fx, k320.fy, k320.cx, k320.cy) == (300.0, 300.0, 159.5, 119.5)
    point = np.array([0.1, -0.05, 0.9])
    # A point's edge coordinate (K coordinate + 0.5) halves with the resolution.
    for k_full, k_half, axis in ((K640.fx, k320.fx, 0), (K640.fy, k320.fy, 1)):
        c_full, c_half = (K640.cx, k320.cx) if axis == 0 else (K640.cy, k320.cy)
        edge_full = point[axis] / point[2] * k_full + c_full + 0.5
        edge_half = point[axis] / point[2] * k_half + c_half + 0.5
        assert edge_half == pytest.approx(edge_full / 2)


def test_mismatched_intrinsics_and_depth_size() -> None:
    with pytest.raises(GraspError, match=r"640x480 but the depth image is 320x240.*scaled\(320, 240\)"):
        compute_grasp(np.ones((240, 320), np.float32), K640, (0, 0, 10, 10))


def test_16uc1_32fc1_and_depth_scale_agree() -> None:
    metres = TILTED.render(K640)
    box = TILTED_BOX
    millimetres = np.nan_to_num(np.round(metres * 1000.0), nan=0.0).astype(np.uint16)
    tenth_mm = np.nan_to_num(np.round(metres * 10000.0), nan=0.0).astype(np.uint16)

    reference = compute_grasp(depth_to_metres(metres, "32FC1"), K640, box)
    variants = [
        compute_grasp(depth_to_metres(millimetres, "16UC1"), K640, box),
        compute_grasp(depth_to_metres(tenth_mm, "16UC1", depth_scale=1e-4), K640, box),
        compute_grasp(depth_to_metres(metres * 1000.0, "32FC1", depth_scale=0.001), K640, box),
    ]

    assert_matches(reference, TILTED)
    for grasp in variants:
        assert grasp.status == ""
        np.testing.assert_allclose(grasp.position, reference.position, atol=0.001)
        assert angle_deg(rotation_of(grasp)[:, 2], rotation_of(reference)[:, 2]) < 1.0
        assert grasp.grasp_width == pytest.approx(reference.grasp_width, abs=0.001)


def test_depth_to_metres_marks_invalid_pixels() -> None:
    raw16 = np.array([[0, 1000, 65535]], np.uint16)
    np.testing.assert_array_equal(
        depth_to_metres(raw16, "16UC1"), np.array([[np.nan, 1.0, 65.535]], np.float32)
    )
    raw32 = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 1.5]], np.float32)
    out = depth_to_metres(raw32, "32FC1")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[np.nan] * 5 + [1.5]], np.float32))
    assert np.isnan(raw32[0, 0]) and raw32[0, 5] == 1.5  # the input is left alone


def test_depth_msg_to_metres() -> None:
    raw = np.array([[0, 500], [1250, 3000]], np.uint16)
    msg = SimpleNamespace(**encode_image_fields(raw, "16UC1"))
    np.testing.assert_allclose(
        depth_msg_to_metres(msg), np.array([[np.nan, 0.5], [1.25, 3.0]], np.float32), rtol=1e-6
    )


def test_unsupported_depth_encoding() -> None:
    assert DEPTH_ENCODINGS == ("16UC1", "32FC1")
    with pytest.raises(GraspError, match=r"unsupported depth encoding 'mono16'.*16UC1 or 32FC1"):
        depth_to_metres(np.zeros((2, 2), np.uint16), "mono16")
    with pytest.raises(GraspError, match="does not match encoding '16UC1'"):
        depth_to_metres(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(GraspError, match="depth_scale=-1"):
        depth_to_metres(np.zeros((2, 2), np.uint16), "16UC1", depth_scale=-1.0)
    with pytest.raises(GraspError, match="float array in metres.*depth_to_metres"):
        compute_grasp(np.zeros((480, 640), np.uint16), K640, (0, 0, 10, 10))


def test_thin_line_falls_back_to_camera_ray() -> None:
    depth = np.full((480, 640), np.nan, np.float32)
    depth[240, :] = TILTED.render(K640)[240, :]  # one valid row: collinear points
    box = (250.0, 200.0, 390.0, 280.0)

    grasp = compute_grasp(depth, K640, box, margin=MARGIN)

    assert grasp.status.startswith("plane fit degenerate (")
    assert grasp.status.endswith("points): approach along camera ray")
    r = rotation_of(grasp)
    ray = np.array(grasp.position) / np.linalg.norm(grasp.position)
    np.testing.assert_allclose(r[:, 2], ray, atol=1e-9)
    # Narrow side is the box's height (80 px): x stays close to image-down.
    assert angle_deg(r[:, 0], np.array([0.0, 1.0, 0.0])) < 10.0


def test_too_few_points_falls_back_to_camera_ray() -> None:
    depth = np.full((480, 640), np.nan, np.float32)
    depth[238:241, 318:321] = 0.9
    grasp = compute_grasp(depth, K640, (300, 220, 340, 260), min_points=30)

    assert grasp.status == "plane fit degenerate (9 points): approach along camera ray"
    r = rotation_of(grasp)
    assert grasp.position[2] == pytest.approx(0.9)
    np.testing.assert_allclose(r[:, 2], np.array(grasp.position) / np.linalg.norm(grasp.position))


@pytest.mark.parametrize(
    "k, message",
    [
        (
            [0, 0, 319.5, 0, 600, 239.5, 0, 0, 1],
            r"fx=0\.0; is the camera calibrated\? publish a CameraInfo with K filled",
        ),
        ([600, 0, 319.5, 0, float("nan"), 239.5, 0, 0, 1], r"fy=nan; is the camera calibrated"),
        ([600, 0, float("inf"), 0, 600, 239.5, 0, 0, 1], r"cx=inf"),
        ([600, 0, 319.5], r"K has 3 values, expected 9"),
    ],
    ids=["fx-zero", "fy-nan", "cx-inf", "short-k"],
)
def test_bad_intrinsics(k: list[float], message: str) -> None:
    with pytest.raises(GraspError, match=message):
        CameraIntrinsics.from_k(k, 640, 480)


def test_intrinsics_from_camera_info() -> None:
    info = SimpleNamespace(k=[600.0, 0, 319.5, 0, 610.0, 239.5, 0, 0, 1], width=640, height=480)
    expected = CameraIntrinsics(600.0, 610.0, 319.5, 239.5, 640, 480)
    assert CameraIntrinsics.from_camera_info(info) == expected
    with pytest.raises(GraspError, match="width=0, height=0"):
        CameraIntrinsics.from_camera_info(SimpleNamespace(k=info.k, width=0, height=0))


def test_bad_box_and_parameters() -> None:
    depth = FLAT.render(K640)
    with pytest.raises(GraspError, match="x0 <= x1"):
        compute_grasp(depth, K640, (100, 100, 50, 150))
    with pytest.raises(GraspError, match="x0 <= x1"):
        compute_grasp(depth, K640, (float("nan"), 100, 150, 150))
    with pytest.raises(GraspError, match=r"color_size=\(0, 640\)"):
        compute_grasp(depth, K640, (100, 100, 150, 150), color_size=(0, 640))
    with pytest.raises(GraspError, match=r"central_fraction=0; use a fraction in \(0, 1\]"):
        compute_grasp(depth, K640, (100, 100, 150, 150), central_fraction=0)


@pytest.mark.parametrize("seed", range(5))
def test_quaternion_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    r = matrix_from_quaternion(tuple(q))
    np.testing.assert_allclose(matrix_from_quaternion(quaternion_from_matrix(r)), r, atol=1e-12)


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)])
def test_quaternion_of_half_turns(axis: tuple[int, int, int]) -> None:
    n = np.array(axis, float) / np.linalg.norm(axis)
    r = 2.0 * np.outer(n, n) - np.eye(3)  # 180 degrees about n: trace -1
    q = quaternion_from_matrix(r)
    np.testing.assert_allclose(q, [*n, 0.0], atol=1e-12)
