"""OWLv2 / OWL-ViT backend on tiny random models: outputs, caches, exactness, box mapping, loading errors."""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from backend_probes import CallCounter, frame
from vlm_perception.backends.base import Detection
from vlm_perception.backends.caching import FrameCache, PhraseCache
from vlm_perception.backends.owl import OwlBackend, Owlv2Backend, OwlVitBackend, boxes_to_pixels, nms
from vlm_perception.core.errors import BackendError, BackendLoadError

FAMILIES = ("owlv2", "owlvit")


@pytest.fixture
def model_dirs(tiny_owl_model_dir: Path, tiny_owlvit_model_dir: Path) -> dict[str, Path]:
    return {"owlv2": tiny_owl_model_dir, "owlvit": tiny_owlvit_model_dir}


@pytest.fixture(params=FAMILIES)
def backend(request: pytest.FixtureRequest, model_dirs: dict[str, Path]) -> OwlBackend:
    return OwlBackend(request.param, model_path=str(model_dirs[request.param]), device="cpu")


@pytest.fixture
def towers(backend: OwlBackend) -> Iterator[tuple[CallCounter, CallCounter]]:
    """(text tower, image tower) call counters on the backend's model."""
    text = CallCounter(backend.model.base_model.text_model)
    vision = CallCounter(backend.model.base_model.vision_model)
    yield text, vision
    text.remove()
    vision.remove()


# detect


@pytest.mark.parametrize("shape", [(60, 120), (120, 60)])
def test_detect_gives_every_label_boxes_inside_the_image(backend: OwlBackend, shape: tuple[int, int]) -> None:
    labels = ["a cat", "a dog", "a red cup"]
    detections = backend.detect(frame(*shape), labels)

    assert all(isinstance(d, Detection) for d in detections)
    assert {d.label for d in detections} == set(labels)
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)
    height, width = shape
    for d in detections:
        assert 0.0 <= d.score <= 1.0
        x0, y0, x1, y1 = d.box
        assert 0.0 <= x0 < x1 <= width and 0.0 <= y0 < y1 <= height
    for label in labels:
        assert sum(d.label == label for d in detections) <= backend.max_detections_per_label


def test_detect_keeps_the_best_box_when_nothing_reaches_min_score(model_dirs: dict[str, Path]) -> None:
    backend = Owlv2Backend(model_path=str(model_dirs["owlv2"]), min_score=1.0)
    detections = backend.detect(frame(64, 64), ["a cat", "a dog"])
    assert sorted(d.label for d in detections) == ["a cat", "a dog"]
    assert all(0.0 < d.score < 1.0 for d in detections)


def test_detect_applies_nms_and_the_per_label_cap(model_dirs: dict[str, Path]) -> None:
    backend = OwlVitBackend(model_path=str(model_dirs["owlvit"]), nms_iou=0.1, max_detections_per_label=4,
                            min_score=0.0)
    detections = backend.detect(frame(96, 96), ["a cat"])
    assert len(detections) == 4
    boxes = np.array([d.box for d in detections])
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert iou(boxes[i], boxes[j]) <= 0.1


def test_detect_with_no_labels_is_empty(backend: OwlBackend) -> None:
    assert backend.detect(frame(32, 32), []) == []


@pytest.mark.parametrize("image", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                   np.zeros((0, 10, 3), np.uint8)])
def test_detect_rejects_images_that_are_not_rgb_uint8(backend: OwlBackend, image: np.ndarray) -> None:
    with pytest.raises(BackendError, match="RGB uint8"):
        backend.detect(image, ["a cat"])


def test_nms_suppresses_overlaps_best_first() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=np.float32)
    scores = np.array([0.5, 0.9, 0.3, 0.8], dtype=np.float32)
    assert nms(boxes, scores, iou_threshold=0.5, max_keep=10) == [1, 2]
    assert nms(boxes, scores, iou_threshold=0.95, max_keep=10) == [1, 3, 0, 2]
    assert nms(boxes, scores, iou_threshold=0.95, max_keep=2) == [1, 3]


# caches, counted on the real encoder modules


def test_text_tower_runs_once_per_new_phrase(backend: OwlBackend, towers: tuple[CallCounter, CallCounter]) -> None:
    text, _ = towers
    image = frame(48, 64)
    backend.detect(image, ["a", "b"])
    assert text.batches == [2]
    backend.detect(image, ["b", "c"])
    assert text.batches == [2, 1]  # only "c" was encoded
    backend.detect(image, ["c", "a", "b"])
    assert text.batches == [2, 1]


def test_image_tower_runs_once_per_frame(backend: OwlBackend, towers: tuple[CallCounter, CallCounter]) -> None:
    _, vision = towers
    image = frame(48, 64)
    for labels in (["a"], ["b", "c"], ["a", "d"]):
        backend.detect(image, labels)
    assert len(vision.batches) == 1
    backend.detect(frame(48, 64), ["a"])  # same pixels, new array: a new frame
    assert len(vision.batches) == 2


def test_writeable_images_are_not_cached(backend: OwlBackend, towers: tuple[CallCounter, CallCounter]) -> None:
    _, vision = towers
    image = np.array(frame(48, 64))  # writeable: it could change in place between calls
    backend.detect(image, ["a"])
    backend.detect(image, ["a"])
    assert len(vision.batches) == 2


def test_clear_caches_forgets_frames_and_phrases(backend: OwlBackend,
                                                 towers: tuple[CallCounter, CallCounter]) -> None:
    text, vision = towers
    image = frame(48, 64)
    backend.detect(image, ["a"])
    backend.clear_caches()
    backend.detect(image, ["a"])
    assert (len(text.batches), len(vision.batches)) == (2, 2)


def test_phrase_cache_computes_missing_in_one_batch_and_evicts_lru() -> None:
    calls: list[list[str]] = []

    def compute(phrases: list[str]) -> list[str]:
        calls.append(phrases)
        return [p.upper() for p in phrases]

    cache: PhraseCache[str] = PhraseCache(capacity=3)
    assert cache.get_many(["a", "b", "a"], compute) == ["A", "B", "A"]
    assert cache.get_many(["b", "c", "d"], compute) == ["B", "C", "D"]
    assert calls == [["a", "b"], ["c", "d"]]
    assert len(cache) == 3 and "a" not in cache  # "a" was least recently used
    assert cache.get_many(["a", "b", "c", "d", "e"], compute) == ["A", "B", "C", "D", "E"]
    assert len(cache) == 3 and "e" in cache and "b" not in cache


def test_frame_cache_hits_only_the_same_live_array() -> None:
    calls: list[int] = []

    def compute(image: np.ndarray) -> int:
        calls.append(1)
        return int(image.sum())

    cache: FrameCache[int] = FrameCache()
    image = frame(4, 4)
    assert cache.get_or_compute(image, compute) == cache.get_or_compute(image, compute)
    assert len(calls) == 1
    freed_id = id(image)
    del image
    gc.collect()
    for _ in range(100):  # new arrays may reuse the freed id; none may hit
        other = frame(4, 4, seed=1)
        cache.get_or_compute(other, compute)
        if id(other) == freed_id:
            break
    assert len(calls) >= 2
    assert cache.get_or_compute(other, compute) == int(other.sum())


# the cached path is the model's forward, split up


@pytest.mark.parametrize("shape", [(96, 96), (50, 80)])
def test_cached_path_equals_plain_forward(backend: OwlBackend, shape: tuple[int, int]) -> None:
    labels = ["a cat", "a dog on a sofa", "something with a very long description that runs past sixteen tokens"]
    image = frame(*shape)
    with torch.inference_mode():
        pixel_values = backend._preprocess(image)
        image_feats, boxes = backend._encode_pixels(pixel_values)
        logits = backend._class_logits(image_feats, torch.stack(backend._embed_phrases(labels)))
        tokens = backend.tokenizer(labels, padding="max_length", truncation=True, max_length=16,
                                   return_tensors="pt")
        expected = backend.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                 pixel_values=pixel_values)
    torch.testing.assert_close(logits, expected.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(boxes, expected.pred_boxes, rtol=1e-5, atol=1e-6)

    # And detect's best score per label is the best sigmoid score forward() gives on a visible box.
    visible = boxes_to_pixels(expected.pred_boxes[0].numpy(), shape, backend.family == "owlv2")
    visible = (visible[:, 2] > visible[:, 0]) & (visible[:, 3] > visible[:, 1])
    best = {}
    for d in backend.detect(image, labels):
        best.setdefault(d.label, d.score)
    for column, label in enumerate(labels):
        want = expected.logits[0, :, column].sigmoid()[torch.from_numpy(visible)].max().item()
        assert best[label] == pytest.approx(want, abs=1e-5)


# preprocessing and box mapping for non-square images


def test_owlv2_pads_bottom_right_with_gray(model_dirs: dict[str, Path]) -> None:
    backend = Owlv2Backend(model_path=str(model_dirs["owlv2"]))
    white = np.full((48, 96, 3), 255, np.uint8)  # 96 wide: padded to 96x96, no resize
    pixels = backend._preprocess(white)[0].numpy()
    mean, std = backend._mean[:, None, None], backend._std[:, None, None]
    np.testing.assert_allclose(pixels[:, :48], np.broadcast_to((1.0 - mean) / std, (3, 48, 96)), atol=1e-5)
    np.testing.assert_allclose(pixels[:, 48:], np.broadcast_to((0.5 - mean) / std, (3, 48, 96)), atol=1e-5)


def test_owlvit_stretches_without_padding(model_dirs: dict[str, Path]) -> None:
    backend = OwlVitBackend(model_path=str(model_dirs["owlvit"]))
    pixels = backend._preprocess(np.full((30, 200, 3), 255, np.uint8))[0].numpy()
    assert pixels.shape == (3, 96, 96)
    mean, std = backend._mean[:, None, None], backend._std[:, None, None]
    np.testing.assert_allclose(pixels, np.broadcast_to((1.0 - mean) / std, (3, 96, 96)), atol=1e-5)


NORMALISED = np.array([[0.5, 0.25, 0.5, 0.2],  # cx, cy, w, h
                       [0.1, 0.9, 0.2, 0.2]], dtype=np.float32)


def test_owlv2_boxes_scale_by_the_padded_square() -> None:
    # 60 high, 120 wide: the padded square is 120, the image fills its top half.
    np.testing.assert_allclose(boxes_to_pixels(NORMALISED, (60, 120), padded_square=True),
                               [[30, 18, 90, 42], [0, 60, 24, 60]])  # second box lies in the padding
    # 120 high, 60 wide: the image fills the left half.
    np.testing.assert_allclose(boxes_to_pixels(NORMALISED, (120, 60), padded_square=True),
                               [[30, 18, 60, 42], [0, 96, 24, 120]])


def test_owlvit_boxes_scale_by_width_and_height() -> None:
    np.testing.assert_allclose(boxes_to_pixels(NORMALISED, (60, 120), padded_square=False),
                               [[30, 9, 90, 21], [0, 48, 24, 60]])
    np.testing.assert_allclose(boxes_to_pixels(NORMALISED, (120, 60), padded_square=False),
                               [[15, 18, 45, 42], [0, 96, 12, 120]])


# loading


def test_missing_model_path_names_model_path(tmp_path: Path) -> None:
    with pytest.raises(BackendLoadError, match="model_path") as error:
        Owlv2Backend(model_path=str(tmp_path / "nowhere"))
    assert "\n" not in str(error.value)


def test_model_path_without_a_model_names_model_path(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendLoadError, match="model_path") as error:
        OwlVitBackend(model_path=str(tmp_path))
    assert "\n" not in str(error.value)


def test_uncached_hub_model_fails_fast_and_names_model_path() -> None:
    with pytest.raises(BackendLoadError, match="no-such-org/no-such-owl.*model_path"):
        Owlv2Backend(model="no-such-org/no-such-owl")


@pytest.mark.parametrize("backend_class, other", [(OwlVitBackend, "owlv2"), (Owlv2Backend, "owlvit")])
def test_family_mismatch_is_named(backend_class: type, other: str, model_dirs: dict[str, Path]) -> None:
    with pytest.raises(BackendLoadError, match=f"holds a '{other}' model"):
        backend_class(model_path=str(model_dirs[other]))


def test_unknown_option_is_named(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(BackendLoadError, match="box_threshold"):
        Owlv2Backend(model_path=str(model_dirs["owlv2"]), box_threshold=0.2)


@pytest.mark.parametrize("option", [{"nms_iou": 1.5}, {"min_score": -0.1}, {"max_detections_per_label": 0},
                                    {"min_score": "high"}])
def test_invalid_option_values_are_rejected(option: dict, model_dirs: dict[str, Path]) -> None:
    with pytest.raises(BackendLoadError, match=next(iter(option))):
        Owlv2Backend(model_path=str(model_dirs["owlv2"]), **option)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_load_error(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(BackendLoadError, match="CUDA is not available"):
        Owlv2Backend(model_path=str(model_dirs["owlv2"]), device="cuda")


def test_auto_device_is_cpu_without_cuda(model_dirs: dict[str, Path]) -> None:
    backend = OwlVitBackend(model_path=str(model_dirs["owlvit"]))
    assert backend.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_registry_builds_both_families(model_dirs: dict[str, Path]) -> None:
    from vlm_perception.backends.registry import create_backend

    for name, backend_class in (("owlv2", Owlv2Backend), ("owlvit", OwlVitBackend)):
        backend = create_backend(name, {"model": "", "model_path": str(model_dirs[name]), "device": "auto",
                                         "min_score": 0.05})
        assert isinstance(backend, backend_class) and backend.min_score == 0.05


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
