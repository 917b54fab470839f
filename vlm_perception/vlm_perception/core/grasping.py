"""Detector box + aligned depth + intrinsics -> a grasp pose for a parallel gripper.

Frames and conventions:

- Poses are in the camera optical frame: x right, y down, z forward.
- The grasp's z axis is the approach direction, pointing into the surface
  (away from the camera); its x axis lies across the object's narrow side, so
  a parallel gripper closes along x; y = z cross x (right-handed).
- Pixel coordinates follow ROS/OpenCV: K maps a point to continuous image
  coordinates in which the integer (u, v) is the CENTRE of pixel (u, v).
- Detector boxes (x0, y0, x1, y1) are in edge coordinates, shifted half a pixel
  from K's: pixel u covers [u, u + 1), so (0, 0, W, H) is the whole image. The
  box centre ((x0 + x1) / 2, (y0 + y1) / 2) is therefore deprojected at
  K coordinates ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5).
- Edge coordinates scale exactly with resolution, so a box moves from the
  color image to the depth image by the size ratio, and intrinsics scale as
  fx' = fx * s, cx' = (cx + 0.5) * s - 0.5 (see CameraIntrinsics.scaled).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .errors import GraspError
from .images import image_msg_to_array

# Metres per raw unit of each supported depth encoding (REP 118).
_DEPTH_UNITS: dict[str, float] = {"16UC1": 0.001, "32FC1": 1.0}
DEPTH_ENCODINGS: tuple[str, ...] = tuple(_DEPTH_UNITS)
# A plane fit on more points than this is barely more accurate, only slower.
_MAX_FIT_POINTS = 2048
# Points whose second principal spread is under this fraction of the first lie
# on a line: the plane's normal is then undetermined.
_MIN_SPREAD_RATIO = 0.05
# Inlier band: 3 robust sigmas, but never under 1% of the depth, so a flat
# surface (MAD 0) keeps its sensor noise.
_MAD_SIGMAS = 3.0
_MIN_BAND_FRACTION = 0.01
_MAD_TO_SIGMA = 1.4826
# Plane refits dropping points off the plane by more than 3 robust sigmas of
# the residuals, or 0.2% of the depth where those are ~0 (noise-free data).
_REFITS = 2
_MIN_RESIDUAL_FRACTION = 0.002


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one image resolution (ROS/OpenCV pixel-centre convention)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise GraspError(
                    f"camera_info has {name}={value}; is the camera calibrated? "
                    "publish a CameraInfo with K filled"
                )
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise GraspError(
                    f"camera_info has {name}={value}; publish a CameraInfo with K filled"
                )
        if self.width <= 0 or self.height <= 0:
            raise GraspError(
                f"camera_info has width={self.width}, height={self.height}; "
                "publish a CameraInfo with the image size filled"
            )

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> CameraIntrinsics:
        """From a row-major 3x3 K (CameraInfo.k) and the image size it belongs to."""
        values = [float(x) for x in k]
        if len(values) != 9:
            raise GraspError(
                f"K has {len(values)} values, expected 9 (row-major 3x3); "
                "pass CameraInfo.k"
            )
        return cls(values[0], values[4], values[2], values[5], int(width), int(height))

    @classmethod
    def from_camera_info(cls, info: Any) -> CameraIntrinsics:
        """From anything with sensor_msgs/CameraInfo's `k`, `width` and `height`."""
        return cls.from_k(info.k, info.width, info.height)

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera at another resolution (e.g. a decimated depth stream).

        Pixel edges scale exactly, and K's integer coordinates sit half a pixel
        inside them, so principal points move as c' = (c + 0.5) * s - 0.5.
        """
        if width <= 0 or height <= 0:
            raise GraspError(f"cannot scale intrinsics to {width}x{height}; pass a positive size")
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            int(width),
            int(height),
        )


@dataclass(frozen=True)
class Grasp:
    has_pose: bool
    position: tuple[float, float, float]  # metres, camera optical frame
    orientation: tuple[float, float, float, float]  # quaternion (x, y, z, w)
    grasp_width: float  # gripper opening, metres
    status: str  # "" after a full plane fit; otherwise why the pose is missing or approximate


def no_pose(status: str) -> Grasp:
    """A Grasp without a pose; status says why."""
    return Grasp(False, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0), 0.0, status)


def depth_to_metres(depth: np.ndarray, encoding: str, depth_scale: float = 0.0) -> np.ndarray:
    """Depth in metres as a new float32 array; 0, NaN, inf and negative depths become NaN.

    16UC1 is millimetres and 32FC1 metres (REP 118); `depth_scale` > 0
    overrides either with the metres per raw unit.
    """
    unit = _DEPTH_UNITS.get(encoding)
    if unit is None:
        raise GraspError(
            f"unsupported depth encoding {encoding!r}; publish "
            f"{' or '.join(DEPTH_ENCODINGS)} (REP 118) from the depth camera"
        )
    if not (math.isfinite(depth_scale) and depth_scale >= 0):
        raise GraspError(
            f"depth_scale={depth_scale}; use metres per depth unit (> 0), "
            "or 0 for the encoding's default"
        )
    kind = "f" if encoding == "32FC1" else "ui"
    if depth.dtype.kind not in kind:
        raise GraspError(
            f"depth array of dtype {depth.dtype} does not match encoding {encoding!r}; "
            "convert the message with image_msg_to_array"
        )
    scale = depth_scale if depth_scale > 0 else unit
    metres = np.multiply(depth, scale, dtype=np.float32)
    # NaN fails both comparisons, so one mask catches NaN, inf, 0 and negatives.
    metres[~((metres > 0) & (metres < np.inf))] = np.nan
    return metres


def depth_msg_to_metres(msg: Any, depth_scale: float = 0.0) -> np.ndarray:
    """A sensor_msgs/Image depth message as float32 metres with NaN for invalid pixels."""
    return depth_to_metres(image_msg_to_array(msg), msg.encoding, depth_scale)


def quaternion_from_matrix(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """A unit quaternion (x, y, z, w) for a 3x3 rotation matrix.

    Branches on the largest diagonal term (Shepperd), so the square root is
    never taken of a value near zero, including at 180-degree rotations.
    """
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] >= m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s)
    # w >= 0 picks one of the two equivalent quaternions, deterministically.
    scale = (-1.0 if q[3] < 0 else 1.0) / math.sqrt(sum(c * c for c in q))
    return (float(q[0] * scale), float(q[1] * scale), float(q[2] * scale), float(q[3] * scale))


def _pixel_range(centre: float, half: float, size: int) -> tuple[int, int]:
    """[start, stop) of the pixels whose centres lie within centre +- half (edge coordinates).

    A region narrower than a pixel keeps the pixel under its centre; the
    result is clipped to the image and empty if the region lies outside it.
    """
    start = math.ceil(centre - half - 0.5)
    stop = math.floor(centre + half - 0.5) + 1
    if stop <= start:
        start = math.floor(centre)
        stop = start + 1
    return max(start, 0), min(stop, size)


def _median(values: np.ndarray) -> float:
    """The upper median of a non-empty array.

    A robust statistic needs no averaging of the middle pair, and np.median's
    overhead is about twice the partition itself at these sizes.
    """
    middle = values.size // 2
    return float(np.partition(values, middle)[middle])


def _fit_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centroid, unit normal (either sign) and second-to-first principal spread ratio.

    points is (3, N): a mean over contiguous rows is several times faster than
    over the columns of an (N, 3) array.
    """
    centroid = points.mean(axis=1)
    centred = points - centroid[:, None]
    # Eigen-decomposition of the 3x3 scatter matrix: the SVD's answer, far cheaper.
    eigenvalues, eigenvectors = np.linalg.eigh(centred @ centred.T)
    spreads = np.sqrt(np.maximum(eigenvalues, 0.0))  # singular values, ascending
    ratio = float(spreads[1] / spreads[2]) if spreads[2] > 0 else 0.0
    return centroid, eigenvectors[:, 0], ratio


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b for 3-vectors, without np.cross's tens of microseconds of overhead a call."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _in_plane_axis(normal: np.ndarray, ray: np.ndarray, image_axis: np.ndarray) -> np.ndarray:
    """Unit direction on the plane (normal) that images along image_axis at the target.

    It is where the plane meets the plane spanned by the target's ray and the
    image axis, so it is perspective-correct on tilted surfaces.
    """
    direction = _cross(normal, _cross(ray, image_axis))
    if np.linalg.norm(direction) < 1e-9:
        # The plane holds both the ray and the image axis (seen edge-on), so the
        # image axis itself lies in it.
        direction = image_axis - (image_axis @ normal) * normal
    direction /= np.linalg.norm(direction)
    return direction if direction @ image_axis >= 0 else -direction


def compute_grasp(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    box: Sequence[float],
    color_size: Optional[tuple[int, int]] = None,
    margin: float = 0.01,
    central_fraction: float = 0.5,
    min_points: int = 30,
) -> Grasp:
    """The grasp for one detector box.

    depth_m: float depth in metres (H, W), NaN/0/inf where invalid, aligned to
        the color image (see depth_to_metres).
    intrinsics: those of the depth image (its CameraInfo).
    box: (x0, y0, x1, y1) in color-image edge coordinates.
    color_size: (H, W) of the image the box is in; None if it is the depth's.
    margin: metres added to the narrow side's width for the gripper opening.
    central_fraction: fraction of the box's width and height, about its centre,
        whose depth is used, keeping background at the box edges out.
    min_points: fewest valid points for a plane fit.
    """
    if depth_m.ndim != 2 or depth_m.dtype.kind != "f":
        raise GraspError(
            f"depth must be a (H, W) float array in metres, got {depth_m.dtype} {depth_m.shape}; "
            "convert it with depth_to_metres"
        )
    height, width = depth_m.shape
    if (intrinsics.width, intrinsics.height) != (width, height):
        raise GraspError(
            f"intrinsics are for {intrinsics.width}x{intrinsics.height} but the depth image is "
            f"{width}x{height}; pass the depth camera's CameraInfo, "
            f"or intrinsics.scaled({width}, {height})"
        )
    if not 0 < central_fraction <= 1:
        raise GraspError(f"central_fraction={central_fraction}; use a fraction in (0, 1]")
    x0, y0, x1, y1 = (float(c) for c in box)
    if not all(math.isfinite(c) for c in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
        raise GraspError(f"box {tuple(box)} is not (x0, y0, x1, y1) with x0 <= x1, y0 <= y1")
    color_h, color_w = color_size if color_size is not None else (height, width)
    if color_h <= 0 or color_w <= 0:
        raise GraspError(f"color_size={color_size}; pass the color image's (height, width)")
    sx, sy = width / color_w, height / color_h

    # The box in depth-image edge coordinates.
    box_w, box_h = (x1 - x0) * sx, (y1 - y0) * sy
    centre_u, centre_v = (x0 + x1) * 0.5 * sx, (y0 + y1) * 0.5 * sy
    u_start, u_stop = _pixel_range(centre_u, 0.5 * central_fraction * box_w, width)
    v_start, v_stop = _pixel_range(centre_v, 0.5 * central_fraction * box_h, height)
    if u_start >= u_stop or v_start >= v_stop:
        return no_pose("box outside the depth image")

    region = depth_m[v_start:v_stop, u_start:u_stop]
    valid = (region > 0) & (region < np.inf)  # NaN fails both
    depths = region[valid]
    if depths.size == 0:
        return no_pose("no valid depth in box")
    median = _median(depths)
    sigma = _MAD_TO_SIGMA * _median(np.abs(depths - median))
    band = max(_MAD_SIGMAS * sigma, _MIN_BAND_FRACTION * median)
    inlier = valid & (np.abs(region - median) <= band)
    z = region[inlier]
    depth = _median(z)

    # The target's ray, in K coordinates (pixel centres at integers).
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    ray = np.array([(centre_u - 0.5 - cx) / fx, (centre_v - 0.5 - cy) / fy, 1.0])
    position = ray * depth

    status = ""
    normal: Optional[np.ndarray] = None
    n_points = z.size
    if n_points >= min_points:
        step = -(-n_points // _MAX_FIT_POINTS)  # ceil: an even subsample of at most the cap
        # Boolean indexing and flatnonzero share row-major order, so z and indices stay paired.
        rows, cols = np.divmod(np.flatnonzero(inlier)[::step], region.shape[1])
        z = z[::step].astype(np.float64)
        points = np.empty((3, z.size))
        points[0] = (cols + (u_start - cx)) * z / fx
        points[1] = (rows + (v_start - cy)) * z / fy
        points[2] = z
        centroid, normal, spread_ratio = _fit_plane(points)
        # Trimmed refits: points off the dominant plane (an edge's side face,
        # a rim) tilt a least-squares normal; each pass drops the worst of them.
        for _ in range(_REFITS):
            if spread_ratio <= _MIN_SPREAD_RATIO:
                break
            residual = np.abs(normal @ points - normal @ centroid)
            residual_sigma = _MAD_TO_SIGMA * _median(residual)
            keep = residual <= max(_MAD_SIGMAS * residual_sigma, _MIN_RESIDUAL_FRACTION * depth)
            if keep.all() or np.count_nonzero(keep) < min_points:
                break
            points = points[:, keep]
            centroid, normal, spread_ratio = _fit_plane(points)
        if spread_ratio <= _MIN_SPREAD_RATIO:  # collinear (or a single point): no plane
            normal = None
        else:
            if normal @ centroid < 0:  # into the surface, away from the camera
                normal = -normal
            # Where the centre ray meets the plane, when that agrees with the
            # robust depth: exact on tilted surfaces even if part of the region is invalid.
            along = normal @ ray
            if along > 1e-6:
                plane_depth = float(normal @ centroid) / along
                if abs(plane_depth - depth) <= band:
                    depth = plane_depth
                    position = ray * depth
    if normal is None:
        status = f"plane fit degenerate ({n_points} points): approach along camera ray"
        normal = position / np.linalg.norm(position)

    # Narrow side by metric extent, which differs from pixels when fx != fy.
    across_u = box_w / fx <= box_h / fy
    image_axis = np.array([1.0, 0.0, 0.0]) if across_u else np.array([0.0, 1.0, 0.0])
    x_axis = _in_plane_axis(normal, ray, image_axis)
    y_axis = _cross(normal, x_axis)
    rotation = np.column_stack([x_axis, y_axis, normal])
    narrow = (box_w / fx if across_u else box_h / fy) * depth
    return Grasp(
        True,
        (float(position[0]), float(position[1]), float(position[2])),
        quaternion_from_matrix(rotation),
        float(narrow + margin),
        status,
    )
