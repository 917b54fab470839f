"""ROS-free conversion between image messages and numpy arrays.

Messages are duck-typed: anything with the fields of sensor_msgs/Image
(`height`, `width`, `encoding`, `is_bigendian`, `step`, `data`) or
sensor_msgs/CompressedImage (`format`, `data`). This runs on every camera
frame, so pixel data is viewed in place with numpy and converted with OpenCV
rather than copied or looped over in Python.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import numpy as np

from vlm_perception.core.errors import ImageError


class _Layout(NamedTuple):
    dtype: np.dtype
    channels: int


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(np.dtype(np.uint8), 3),
    "bgr8": _Layout(np.dtype(np.uint8), 3),
    "rgba8": _Layout(np.dtype(np.uint8), 4),
    "bgra8": _Layout(np.dtype(np.uint8), 4),
    "mono8": _Layout(np.dtype(np.uint8), 1),
    "mono16": _Layout(np.dtype(np.uint16), 1),
    "16UC1": _Layout(np.dtype(np.uint16), 1),
    "32FC1": _Layout(np.dtype(np.float32), 1),
    # Generic OpenCV names some drivers publish; 8UC3 follows OpenCV's BGR order.
    "8UC1": _Layout(np.dtype(np.uint8), 1),
    "8UC3": _Layout(np.dtype(np.uint8), 3),
}

RAW_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# Colour conversion per encoding; None means the pixels are already RGB.
_TO_RGB_CODES: dict[str, int | None] = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
}
_DEPTH_ENCODINGS = ("16UC1", "32FC1")

_JPEG_NAMES = ("jpeg", "jpg")


def _layout(encoding: str) -> _Layout:
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageError(
            f"unsupported encoding {encoding!r}; publish one of: "
            f"{', '.join(RAW_ENCODINGS)} (or a jpeg/png CompressedImage)"
        )
    return layout


def _byte_length(data: Any) -> int:
    """Size of `data` in bytes without touching the pixels."""
    if isinstance(data, np.ndarray):
        return data.nbytes
    try:
        return memoryview(data).nbytes
    except TypeError:  # a plain list of ints
        return len(data)


def _data_bytes(data: Any) -> np.ndarray:
    """`data` as a flat uint8 array, sharing memory wherever the buffer allows."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list of ints has no buffer to share
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ImageError(
                f"image data of type {type(data).__name__} is not a byte buffer "
                f"({exc}); pass bytes, array.array('B') or a uint8 numpy array"
            ) from exc


def check_image_msg(msg: Any) -> None:
    """Cheap sanity checks of a raw image message (no pixel work); raises ImageError."""
    layout = _layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(
            f"zero-size image (height={height}, width={width}); "
            "the publisher sent an empty frame, check the camera driver"
        )
    bpp = layout.channels * layout.dtype.itemsize
    if step < width * bpp:
        raise ImageError(
            f"step {step} is smaller than width * bytes per pixel = {width} * {bpp} "
            f"= {width * bpp} for {msg.encoding!r}; check the publisher's step"
        )
    size = _byte_length(msg.data)
    if size != step * height:
        raise ImageError(
            f"data is {size} bytes but step * height = {step} * {height} = "
            f"{step * height}; check the publisher's step and height"
        )


def image_msg_to_array(msg: Any) -> np.ndarray:
    """Validated array in the message's encoding: (H, W, C), or (H, W) for one channel.

    The result is a (possibly read-only) view of `msg.data` unless the byte
    order has to be swapped or `step` splits an element.
    """
    check_image_msg(msg)
    layout = _layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * layout.channels * layout.dtype.itemsize
    order = ">" if msg.is_bigendian else "<"
    wire_dtype = layout.dtype.newbyteorder(order)
    # Slicing each row to row_bytes drops the padding without copying.
    rows = _data_bytes(msg.data).reshape(height, step)[:, :row_bytes]
    array = rows.view(wire_dtype)
    if wire_dtype != layout.dtype:  # only true for multi-byte data in foreign byte order
        array = array.astype(layout.dtype)
    elif step % layout.dtype.itemsize:
        # Rows that start mid-element are misread by OpenCV (seen with 4.x/5.0), so copy.
        array = np.ascontiguousarray(array)
    shape = (height, width) if layout.channels == 1 else (height, width, layout.channels)
    return array.reshape(shape)


def _check_array(array: np.ndarray, encoding: str) -> _Layout:
    """The layout of `encoding`, after checking that `array` fits it."""
    layout = _layout(encoding)
    if array.dtype.newbyteorder("=") != layout.dtype:
        raise ImageError(
            f"array dtype {array.dtype} does not match encoding {encoding!r} "
            f"({layout.dtype}); convert with array.astype(np.{layout.dtype.name})"
        )
    channels = 1 if array.ndim == 2 else array.shape[-1]
    if array.ndim not in (2, 3) or channels != layout.channels:
        raise ImageError(
            f"array shape {array.shape} does not fit encoding {encoding!r}; "
            f"expected (H, W{'' if layout.channels == 1 else f', {layout.channels}'})"
        )
    return layout


def _depth_to_gray8(depth: np.ndarray) -> np.ndarray:
    """Min-max stretch valid (finite, non-zero) depths to 0..255; invalid pixels -> 0."""
    depth = np.ascontiguousarray(depth)  # OpenCV needs element-aligned rows (see above)
    valid = depth != 0
    if depth.dtype.kind == "f":
        valid &= np.isfinite(depth)
    if not valid.any():
        return np.zeros(depth.shape, np.uint8)
    # OpenCV's masked min/max and scaling are several times faster than numpy's here.
    low, high, _, _ = cv2.minMaxLoc(depth, mask=valid.view(np.uint8))
    scale = 255.0 / (high - low) if high > low else 0.0
    gray = cv2.convertScaleAbs(depth, alpha=scale, beta=-low * scale)
    np.multiply(gray, valid, out=gray)  # NaN/inf/0 pixels -> 0
    return gray


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """An RGB uint8 (H, W, 3) C-contiguous image for a model.

    An rgb8 input that is already contiguous is returned as is (no copy).
    """
    layout = _check_array(array, encoding)
    array = np.asarray(array, dtype=layout.dtype)  # OpenCV misreads foreign byte order
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if encoding in _TO_RGB_CODES:
        code = _TO_RGB_CODES[encoding]
        return np.ascontiguousarray(array) if code is None else cv2.cvtColor(array, code)
    if encoding in _DEPTH_ENCODINGS:
        gray = _depth_to_gray8(array)
    elif encoding == "mono16":
        gray = (array >> 8).astype(np.uint8)
    else:  # mono8 / 8UC1
        gray = array
    return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2RGB)


def image_msg_to_rgb8(msg: Any) -> np.ndarray:
    """A raw image message as an RGB uint8 (H, W, 3) array."""
    return to_rgb8(image_msg_to_array(msg), msg.encoding)


def compressed_msg_to_rgb8(msg: Any) -> np.ndarray:
    """A CompressedImage (anything OpenCV decodes) as an RGB uint8 (H, W, 3) array.

    Grayscale images are replicated to three channels and alpha is dropped.
    """
    buf = _data_bytes(msg.data)
    if buf.size == 0:
        raise ImageError(
            f"compressed image (format {msg.format!r}) has 0 bytes of data; "
            "check that the publisher fills CompressedImage.data"
        )
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None:
        hint = (
            "compressedDepth is not supported, subscribe to the raw depth topic"
            if "compresseddepth" in str(msg.format).lower()
            else "publish jpeg or png, and check the data is not truncated"
        )
        raise ImageError(
            f"could not decode compressed image (format {msg.format!r}, "
            f"{buf.size} bytes); {hint}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """The fields of a sensor_msgs/Image holding `array` in `encoding`.

    `sensor_msgs.msg.Image(**encode_image_fields(...))` builds the message.
    """
    layout = _check_array(array, encoding)
    little = np.ascontiguousarray(array, dtype=layout.dtype.newbyteorder("<"))
    height, width = little.shape[:2]
    return dict(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=0,
        step=int(width) * layout.channels * layout.dtype.itemsize,
        data=little.tobytes(),
    )


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg") -> bytes:
    """An RGB uint8 (H, W, 3) array as jpeg or png bytes."""
    _check_array(rgb, "rgb8")
    name = fmt.lower()
    if name not in _JPEG_NAMES + ("png",):
        raise ImageError(f"unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
    ext = ".png" if name == "png" else ".jpg"
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"OpenCV could not encode a {rgb.shape} image as {fmt!r}")
    return encoded.tobytes()
