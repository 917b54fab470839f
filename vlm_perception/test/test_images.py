"""Image message <-> array conversion: exact pixels, layouts and helpful errors."""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest

from vlm_perception.core.errors import ImageError
from vlm_perception.core.images import (
    RAW_ENCODINGS,
    check_image_msg,
    compressed_msg_to_rgb8,
    encode_compressed,
    encode_image_fields,
    image_msg_to_array,
    image_msg_to_rgb8,
    to_rgb8,
)

# 2x3 RGB image whose every channel value is distinct.
RGB = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10
ALPHA = np.full((2, 3, 1), 200, np.uint8)
GRAY8 = np.array([[0, 10, 20], [30, 40, 255]], np.uint8)
GRAY16 = np.array([[0, 256, 512], [0x1234, 0xABCD, 0xFFFF]], np.uint16)
# Valid depth spans 2550 (or 2.55) so each pixel maps to a whole grey level.
DEPTH16 = np.array([[0, 1000, 2000], [3550, 1500, 0]], np.uint16)
DEPTH32 = np.array([[np.nan, 1.0, 2.0], [3.55, np.inf, 0.0]], np.float32)


def gray_rgb(gray: list[list[int]]) -> np.ndarray:
    return np.repeat(np.array(gray, np.uint8)[..., None], 3, axis=2)


def make_msg(arr: np.ndarray, encoding: str, /, **overrides) -> SimpleNamespace:
    fields = encode_image_fields(arr, encoding)
    fields.update(overrides)
    return SimpleNamespace(**fields)


# (encoding, native array, expected to_rgb8 result)
CASES = [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("8UC3", RGB[..., ::-1], RGB),
    ("rgba8", np.concatenate([RGB, ALPHA], axis=2), RGB),
    ("bgra8", np.concatenate([RGB[..., ::-1], ALPHA], axis=2), RGB),
    ("mono8", GRAY8, gray_rgb(GRAY8.tolist())),
    ("8UC1", GRAY8, gray_rgb(GRAY8.tolist())),
    ("mono16", GRAY16, gray_rgb([[0, 1, 2], [0x12, 0xAB, 0xFF]])),
    # Valid depths 1000..3550 stretch to 0..255; 0 stays 0.
    ("16UC1", DEPTH16, gray_rgb([[0, 0, 100], [255, 50, 0]])),
    # NaN, inf and 0 are invalid -> 0; valid 1..3.55 stretch to 0..255.
    ("32FC1", DEPTH32, gray_rgb([[0, 0, 100], [255, 0, 0]])),
]


@pytest.mark.parametrize("encoding, native, rgb", CASES, ids=[c[0] for c in CASES])
def test_round_trip_and_rgb8(encoding: str, native: np.ndarray, rgb: np.ndarray) -> None:
    msg = make_msg(native, encoding)
    out = image_msg_to_array(msg)
    assert out.dtype == native.dtype and out.shape == native.shape
    np.testing.assert_array_equal(out, native)
    for result in (to_rgb8(out, encoding), image_msg_to_rgb8(msg)):
        assert result.dtype == np.uint8 and result.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(result, rgb)


def test_raw_encodings_lists_all_supported() -> None:
    assert {c[0] for c in CASES} == set(RAW_ENCODINGS)


@pytest.mark.parametrize("pad", [8, 7], ids=["pad8", "pad7-unaligned"])
@pytest.mark.parametrize("encoding, native", [("rgb8", RGB), ("16UC1", DEPTH16), ("32FC1", DEPTH32)])
def test_step_with_row_padding(encoding: str, native: np.ndarray, pad: int) -> None:
    fields = encode_image_fields(native, encoding)
    rows = np.frombuffer(fields["data"], np.uint8).reshape(fields["height"], -1)
    padded = np.hstack([rows, np.full((rows.shape[0], pad), 0xEE, np.uint8)])
    msg = make_msg(native, encoding, step=fields["step"] + pad, data=padded.tobytes())
    out = image_msg_to_array(msg)
    np.testing.assert_array_equal(out, native)
    assert out.strides[0] % out.itemsize == 0  # OpenCV misreads rows that split an element
    np.testing.assert_array_equal(image_msg_to_rgb8(msg), to_rgb8(native, encoding))


@pytest.mark.parametrize("encoding, native", [("16UC1", DEPTH16), ("mono16", GRAY16), ("32FC1", DEPTH32)])
def test_big_endian_data(encoding: str, native: np.ndarray) -> None:
    big = native.astype(native.dtype.newbyteorder(">"))
    msg = make_msg(native, encoding, is_bigendian=1, data=big.tobytes())
    out = image_msg_to_array(msg)
    assert out.dtype == native.dtype  # native byte order
    np.testing.assert_array_equal(out, native)
    np.testing.assert_array_equal(to_rgb8(big, encoding), to_rgb8(native, encoding))


@pytest.mark.parametrize(
    "depth",
    [np.zeros((2, 2), np.float32), np.array([[np.nan, np.inf], [-np.inf, 0]], np.float32), np.zeros((2, 2), np.uint16)],
    ids=["zeros", "non-finite", "uint16-zeros"],
)
def test_depth_without_valid_values_is_black(depth: np.ndarray) -> None:
    encoding = "16UC1" if depth.dtype == np.uint16 else "32FC1"
    np.testing.assert_array_equal(to_rgb8(depth, encoding), np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8).copy(), list],
    ids=["bytes", "bytearray", "array.array", "numpy", "list"],
)
def test_data_container_types(wrap) -> None:
    fields = encode_image_fields(RGB, "rgb8")
    msg = make_msg(RGB, "rgb8", data=wrap(fields["data"]))
    check_image_msg(msg)
    np.testing.assert_array_equal(image_msg_to_array(msg), RGB)
    comp = SimpleNamespace(format="png", data=wrap(encode_compressed(RGB, "png")))
    np.testing.assert_array_equal(compressed_msg_to_rgb8(comp), RGB)


def test_compressed_jpeg_is_close_and_png_exact() -> None:
    smooth = np.zeros((16, 16, 3), np.uint8)
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = 200, 100, 30
    jpeg = compressed_msg_to_rgb8(SimpleNamespace(format="jpeg", data=encode_compressed(smooth)))
    assert jpeg.shape == smooth.shape and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - smooth).max() <= 3  # channel order preserved

    png = compressed_msg_to_rgb8(SimpleNamespace(format="png", data=encode_compressed(RGB, "png")))
    np.testing.assert_array_equal(png, RGB)


@pytest.mark.parametrize("channels", [1, 4])
def test_compressed_gray_and_alpha_png(channels: int) -> None:
    import cv2

    if channels == 1:
        image, expected = GRAY8, gray_rgb(GRAY8.tolist())
    else:  # OpenCV writes BGRA; alpha is dropped on decode
        image, expected = np.concatenate([RGB[..., ::-1], ALPHA], axis=2), RGB
    ok, png = cv2.imencode(".png", image)
    assert ok
    out = compressed_msg_to_rgb8(SimpleNamespace(format="png", data=png.tobytes()))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "fmt, data, expected",
    [
        ("jpeg", b"", r"format 'jpeg'.*0 bytes"),
        ("png", b"not an image at all", r"format 'png'.*19 bytes"),
        ("jpeg", encode_compressed(RGB)[:20], r"format 'jpeg'.*20 bytes"),
        ("16UC1; compressedDepth", b"\x00" * 12 + encode_compressed(RGB, "png"), "raw depth topic"),
    ],
    ids=["empty", "garbage", "truncated", "compressedDepth"],
)
def test_bad_compressed_data(fmt: str, data: bytes, expected: str) -> None:
    with pytest.raises(ImageError, match=expected):
        compressed_msg_to_rgb8(SimpleNamespace(format=fmt, data=data))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"encoding": "yuv422"}, r"unsupported encoding 'yuv422'; publish one of: rgb8, bgr8, .*32FC1"),
        ({"data": b"\x00" * 10}, r"data is 10 bytes but step \* height = 9 \* 2 = 18"),
        ({"step": 8, "data": b"\x00" * 16}, r"step 8 is smaller than .* 3 \* 3 = 9 for 'rgb8'"),
        ({"height": 0, "data": b""}, r"zero-size image \(height=0, width=3\)"),
        ({"width": 0}, r"zero-size image \(height=2, width=0\)"),
    ],
    ids=["encoding", "length", "step", "height", "width"],
)
def test_bad_raw_message(overrides: dict, expected: str) -> None:
    msg = make_msg(RGB, "rgb8", **overrides)
    for convert in (check_image_msg, image_msg_to_array, image_msg_to_rgb8):
        with pytest.raises(ImageError, match=expected):
            convert(msg)


@pytest.mark.parametrize(
    "arr, encoding, expected",
    [
        (RGB, "mono8", r"shape \(2, 3, 3\) does not fit encoding 'mono8'"),
        (DEPTH16.astype(np.float64), "16UC1", r"dtype float64 does not match .*astype\(np.uint16\)"),
        (RGB, "nv12", "unsupported encoding 'nv12'"),
    ],
)
def test_bad_arrays(arr: np.ndarray, encoding: str, expected: str) -> None:
    for convert in (to_rgb8, encode_image_fields):
        with pytest.raises(ImageError, match=expected):
            convert(arr, encoding)


def test_encode_image_fields_layout() -> None:
    fields = encode_image_fields(DEPTH16, "16UC1")
    assert fields == dict(
        height=2, width=3, encoding="16UC1", is_bigendian=0, step=6, data=DEPTH16.astype("<u2").tobytes()
    )
    assert type(fields["data"]) is bytes


def test_native_array_is_a_view_without_copy() -> None:
    data = bytearray(encode_image_fields(RGB, "rgb8")["data"])
    out = image_msg_to_array(make_msg(RGB, "rgb8", data=data))
    data[0] = 99  # the array shares the message buffer
    assert out[0, 0, 0] == 99
