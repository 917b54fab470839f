import numpy as np
import pytest

from vlm_perception.ros.debug_image import PALETTE, draw_detections, label_color
from vlm_perception.core.engine import Presence, Target2D

GREY = 90


def frame(height, width):
    rgb = np.full((height, width, 3), GREY, np.uint8)
    rgb.flags.writeable = False  # as the node's frames are
    return rgb


def test_output_is_a_new_rgb_image_and_the_input_is_untouched():
    rgb = frame(240, 320)
    out = draw_detections(rgb, [Target2D("cup", 0.9, (40, 50, 200, 180))],
                          [Presence("cup", True, 0.9, 0.1, 1), Presence("bowl", False, 0.02, 0.1, 0)])
    assert out.shape == (240, 320, 3) and out.dtype == np.uint8
    assert out.flags.writeable and not np.shares_memory(out, rgb)
    assert (rgb == GREY).all()
    assert (out != GREY).any()


@pytest.mark.parametrize("height, width", [(240, 320), (1080, 1920)])
def test_box_edges_take_the_label_colour(height, width):
    x0, y0, x1, y1 = width * 0.25, height * 0.3, width * 0.6, height * 0.9
    out = draw_detections(frame(height, width), [Target2D("red apple", 0.76, (x0, y0, x1, y1))],
                          [Presence("red apple", True, 0.76, 0.1, 1)])
    color = label_color("red apple")
    mid_y, mid_x = int((y0 + y1) / 2), int((x0 + x1) / 2)
    assert tuple(out[mid_y, int(x0)]) == color  # left edge
    assert tuple(out[mid_y, int(x1) - 1]) == color  # right edge
    assert tuple(out[int(y1) - 1, mid_x]) == color  # bottom edge
    assert tuple(out[mid_y, mid_x]) == (GREY,) * 3  # inside the box: untouched
    # The label sits above the box: its background in the label's colour, text in another one.
    label = out[: int(y0), int(x0): int(x0) + 40]
    text = (label != color).any(axis=2) & (label != GREY).any(axis=2)
    assert (label == color).all(axis=2).any() and text.any()


def test_label_colours_are_stable_and_differ_between_labels():
    assert label_color("cup") == label_color("cup") in PALETTE
    assert len({label_color(name) for name in ("cup", "bowl", "apple", "banana", "knife")}) >= 3


def test_phrases_without_boxes_are_listed_in_the_corner():
    rgb = frame(240, 320)
    presence = [Presence("cat", True, 0.83, 0.5, 0), Presence("dog", False, 0.12, 0.5, 0)]
    out = draw_detections(rgb, [], presence)
    corner = out[:60, :160]
    assert (corner < GREY).any()  # the darkened panel
    assert (corner > 200).all(axis=2).any()  # white text on it
    assert (corner == label_color("cat")).all(axis=2).any() and (corner == label_color("dog")).all(axis=2).any()
    assert (out[120:, 200:] == GREY).all()  # the rest of the frame is untouched


def test_phrases_with_boxes_are_not_listed():
    out = draw_detections(frame(240, 320), [Target2D("cup", 0.9, (200, 150, 300, 230))],
                          [Presence("cup", True, 0.9, 0.1, 1)])
    assert (out[:40, :100] == GREY).all()


def test_boxes_outside_the_image_are_clipped():
    out = draw_detections(frame(240, 320), [Target2D("cup", 0.9, (-50, 100, 400, 300)),
                                            Target2D("bowl", 0.5, (500, 500, 600, 600))], [])
    color = label_color("cup")
    assert tuple(out[170, 0]) == color and tuple(out[170, 319]) == color  # left and right, on the borders
    assert tuple(out[239, 160]) == color  # bottom, on the border
    assert label_color("bowl") != color and not (out == label_color("bowl")).all(axis=2).any()  # not drawn


def test_a_non_rgb_image_is_refused():
    with pytest.raises(ValueError, match="expected an RGB uint8 image of shape \\(H, W, 3\\), got float32"):
        draw_detections(np.zeros((10, 10, 3), np.float32), [], [])
