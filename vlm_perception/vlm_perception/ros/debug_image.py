"""The debug image: what the node evaluated, drawn on the frame it evaluated.

Boxes with "label score" for localized targets; phrases without a box
(classify-only backends, or nothing found above threshold) are listed as
"cup 0.83 yes" in the top-left corner. Sizes scale with the image so the
drawing stays readable from 320x240 to 1920x1080.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..core.engine import Presence, Target2D

Color = tuple[int, int, int]

# Matplotlib's tab10 in RGB without its grey, which vanishes on grey scenes (bins, floors).
PALETTE: tuple[Color, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_ON_PANEL: Color = (255, 255, 255)
PANEL_SHADE = 0.35  # the corner list's background keeps this much of the image


def label_color(label: str) -> Color:
    """The RGB colour of a label: the same in every frame and every run (crc32, not the salted hash())."""
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


@dataclass(frozen=True)
class _Style:
    line: int  # box line thickness, px
    font_scale: float
    text_line: int  # text stroke thickness, px
    pad: int  # space around text, px


def _style(height: int, width: int) -> _Style:
    # Scaled by the short side: 0.4 (about 9 px text) at 240 px, 1.5 (about 33 px) at 1080 px.
    short = min(height, width)
    font_scale = max(0.4, short / 720.0)
    return _Style(line=max(1, round(short / 360.0)), font_scale=font_scale,
                  text_line=max(1, round(font_scale * 1.5)), pad=max(2, round(4 * font_scale)))


def draw_detections(rgb: np.ndarray, targets: Sequence[Target2D], presence: Sequence[Presence]) -> np.ndarray:
    """A new RGB uint8 image: `rgb` with the targets' boxes and the box-less phrases drawn on it.

    `rgb` is not modified (it may be read-only). Boxes partly outside the image
    are clipped; boxes entirely outside it are not drawn.
    """
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {got}")
    out = np.array(rgb, dtype=np.uint8, order="C", copy=True)
    style = _style(*out.shape[:2])
    boxed = {target.query for target in targets}
    # The list first: where a box reaches into the corner, the box (what was found) stays readable.
    _draw_list(out, [p for p in presence if p.query not in boxed], style)
    # Targets come best first: draw the best last so they stay on top where boxes overlap.
    for target in reversed(targets):
        _draw_target(out, target, style)
    return out


def _draw_target(out: np.ndarray, target: Target2D, style: _Style) -> None:
    height, width = out.shape[:2]
    x0, y0, x1, y1 = target.box
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return
    # Box edges are pixel boundaries; the drawn rectangle runs through the pixels just inside them.
    left, top = int(np.clip(round(x0), 0, width - 1)), int(np.clip(round(y0), 0, height - 1))
    right = int(np.clip(round(x1) - 1, left, width - 1))
    bottom = int(np.clip(round(y1) - 1, top, height - 1))
    color = label_color(target.query)
    cv2.rectangle(out, (left, top), (right, bottom), color, style.line)

    text = f"{target.query} {target.score:.2f}"
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, style.font_scale, style.text_line)
    label_w, label_h = text_w + 2 * style.pad, text_h + baseline + 2 * style.pad
    # Above the box when there is room, else just inside its top edge; never past the right border.
    label_top = top - label_h if top - label_h >= 0 else top
    label_left = max(0, min(left, width - label_w))
    cv2.rectangle(out, (label_left, label_top), (label_left + label_w, label_top + label_h), color, cv2.FILLED)
    ink = (0, 0, 0) if _luminance(color) > 140 else (255, 255, 255)
    cv2.putText(out, text, (label_left + style.pad, label_top + style.pad + text_h), FONT, style.font_scale,
                ink, style.text_line, cv2.LINE_AA)


def _draw_list(out: np.ndarray, phrases: Sequence[Presence], style: _Style) -> None:
    if not phrases:
        return
    lines = [f"{p.query} {p.confidence:.2f} {'yes' if p.present else 'no'}" for p in phrases]
    sizes = [cv2.getTextSize(line, FONT, style.font_scale, style.text_line) for line in lines]
    text_h = max(h for (_, h), _ in sizes)
    line_h = text_h + max(baseline for _, baseline in sizes) + style.pad
    swatch = text_h
    panel_w = 3 * style.pad + swatch + max(w for (w, _), _ in sizes)
    panel_h = style.pad + line_h * len(lines)
    # Darkened, not blacked out, so the scene behind the list stays recognisable.
    region = out[:panel_h, :panel_w]
    region[...] = (region * PANEL_SHADE).astype(np.uint8)
    for i, (phrase, line) in enumerate(zip(phrases, lines)):
        text_top = style.pad + i * line_h
        cv2.rectangle(out, (style.pad, text_top), (style.pad + swatch, text_top + swatch),
                      label_color(phrase.query), cv2.FILLED)
        cv2.putText(out, line, (2 * style.pad + swatch, text_top + text_h), FONT, style.font_scale,
                    TEXT_ON_PANEL, style.text_line, cv2.LINE_AA)


def _luminance(color: Color) -> float:
    r, g, b = color
    return 0.299 * r + 0.587 * g + 0.114 * b
