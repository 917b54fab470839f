"""The agreement checks of a precision/runtime path against fp32, shared by the tiny and full-size model tests.

Tolerances: image embeddings cosine >= 0.999 to fp32, boxes within 1 px,
scores within 0.01 (thresholds do not change with precision).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm_perception.backends.clip import ClipBackend
from vlm_perception.backends.owl import OwlBackend

LABELS = ["a cat", "a dog", "a red cup"]
MIN_COSINE = 0.999
MAX_BOX_PX = 1.0
MAX_SCORE_DIFF = 0.01


@dataclass(frozen=True)
class Agreement:
    """How far a path is from fp32 on one frame (what the checks bounded)."""
    cosine: float  # the smallest image embedding cosine (per patch for OWL)
    box_px: Optional[float]  # the largest box coordinate difference (every patch); None without boxes
    score: float  # the largest score difference (OWL: every patch and phrase; CLIP: every phrase)

    def __str__(self) -> str:
        boxes = "" if self.box_px is None else f", boxes <= {self.box_px:.3f} px"
        return f"cosine >= {self.cosine:.6f}{boxes}, scores <= {self.score:.5f}"


def needs_openvino(options: dict) -> None:
    if options.get("runtime") == "openvino":
        pytest.importorskip("openvino", reason="pip install -r requirements-openvino.txt")


def check_owl_matches_fp32(backend: OwlBackend, reference: OwlBackend, image: np.ndarray) -> Agreement:
    """Patch embeddings, every patch's box and class score, and each label's best detection agree with fp32."""
    with torch.inference_mode():
        expected, got = reference._encode_frame(image), backend._encode_frame(image)
    assert got.image_feats.dtype == torch.float32
    cosine = F.cosine_similarity(got.image_feats[0], expected.image_feats[0], dim=-1).min().item()
    assert cosine >= MIN_COSINE, f"a patch embedding's cosine to fp32 is {cosine:.6f}"
    box_px = float(np.abs(got.boxes - expected.boxes).max())
    assert box_px <= MAX_BOX_PX, f"a box is {box_px:.3f} px from fp32"
    with torch.inference_mode():
        queries = [torch.stack(b._embed_phrases(LABELS)) for b in (backend, reference)]
        scores = [b._class_logits(f.image_feats, q).sigmoid()
                  for b, f, q in zip((backend, reference), (got, expected), queries)]
    score = (scores[0] - scores[1]).abs().max().item()  # every patch, every phrase
    assert score <= MAX_SCORE_DIFF, f"a patch's score is {score:.4f} from fp32"
    assert_same_detections(backend.detect(image, LABELS), reference.detect(image, LABELS))
    return Agreement(cosine, box_px, score)


def check_clip_matches_fp32(backend: ClipBackend, reference: ClipBackend, image: np.ndarray) -> Agreement:
    """The image embedding, each phrase's embedding and each phrase's score agree with fp32."""
    with torch.inference_mode():
        cosine = F.cosine_similarity(backend._encode_frame(image), reference._encode_frame(image), dim=0).item()
        pairs = list(zip(backend._embed_phrases(LABELS), reference._embed_phrases(LABELS)))
    assert cosine >= MIN_COSINE, f"the image embedding's cosine to fp32 is {cosine:.6f}"
    for label, (got, expected) in zip(LABELS, pairs):
        assert got.dtype == torch.float32
        phrase_cosine = F.cosine_similarity(got, expected, dim=0).item()
        assert phrase_cosine >= MIN_COSINE, f"the embedding of {label!r} has cosine {phrase_cosine:.6f} to fp32"
    assert backend.default_threshold == reference.default_threshold
    got_detections, expected_detections = backend.detect(image, LABELS), reference.detect(image, LABELS)
    assert_same_detections(got_detections, expected_detections)
    score = max(abs(g.score - e.score) for g, e in zip(got_detections, expected_detections))
    return Agreement(cosine, None, score)


def assert_same_detections(got: list, expected: list) -> None:
    """Each label's best detection agrees (lower ones may swap places on near-ties)."""
    def best(detections: list) -> dict:
        return {label: max((d for d in detections if d.label == label), key=lambda d: d.score) for label in LABELS}

    for label, expected_best in best(expected).items():
        got_best = best(got)[label]
        assert abs(got_best.score - expected_best.score) <= MAX_SCORE_DIFF, (
            f"{label!r}: best score {got_best.score:.4f}, fp32 {expected_best.score:.4f}")
        if expected_best.box is not None:
            assert np.abs(np.subtract(got_best.box, expected_best.box)).max() <= MAX_BOX_PX, (
                f"{label!r}: best box {got_best.box}, fp32 {expected_best.box}")
