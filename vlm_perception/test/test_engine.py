import threading
import time

import numpy as np
import pytest

from vlm_perception.backends.base import Detection
from vlm_perception.core.engine import PerceptionEngine, Presence, presence_answer
from vlm_perception.core.errors import BackendError

IMAGE = np.zeros((100, 200, 3), np.uint8)


class Scripted:
    def __init__(self, detections):
        self.detections = detections

    def detect(self, image, labels):
        return list(self.detections)


def test_presence_counts_and_targets_from_detections():
    engine = PerceptionEngine(Scripted([
        Detection("apple", 0.4, (10, 10, 30, 30)),
        Detection("apple", 0.8, (50, 10, 90, 40)),
        Detection("apple", 0.05, (0, 0, 5, 5)),
        Detection("banana", 0.07, (100, 50, 150, 90)),
    ]), "scripted")
    result = engine.evaluate(IMAGE, ["apple", "banana", "cup"], threshold=0.3)
    assert result.presence == [
        Presence("apple", True, 0.8, 0.3, 2),
        Presence("banana", False, 0.07, 0.3, 0),
        Presence("cup", False, 0.0, 0.3, 0),  # nothing returned: absent, confidence 0
    ]
    assert [(t.query, t.score) for t in result.targets] == [("apple", 0.8), ("apple", 0.4)]
    assert result.targets[0].center == (70.0, 25.0) and result.targets[0].size == (40.0, 30.0)
    assert result.answer == "Yes: apple (0.80). No: banana (0.07), cup (0.00)."
    assert result.inference_ms >= 0.0


def test_classify_only_detections_give_presence_without_targets():
    engine = PerceptionEngine(Scripted([Detection("cat", 0.9, None)]), "clip")
    result = engine.evaluate(IMAGE, ["cat"], threshold=0.5)
    assert result.presence == [Presence("cat", True, 0.9, 0.5, 0)]
    assert result.targets == []


def test_boxes_are_clipped_to_the_image():
    engine = PerceptionEngine(Scripted([Detection("apple", 0.9, (-5, -5, 250, 120))]), "x")
    assert engine.evaluate(IMAGE, ["apple"], 0.5).targets[0].box == (0.0, 0.0, 200.0, 100.0)


@pytest.mark.parametrize("detection, message", [
    (Detection("pear", 0.9, None), "not asked for"),
    (Detection("apple", 1.5, None), "outside 0..1"),
    (Detection("apple", float("nan"), None), "outside 0..1"),
    (Detection("apple", 0.5, (1, 2, 3)), "malformed box"),
    (Detection("apple", 0.5, (300, 200, 400, 300)), "outside the 200x100 image"),
])
def test_broken_backend_output_is_rejected(detection, message):
    with pytest.raises(BackendError, match=message):
        PerceptionEngine(Scripted([detection]), "x").evaluate(IMAGE, ["apple"], 0.5)


def test_backend_exceptions_become_backend_errors():
    class Exploding:
        def detect(self, image, labels):
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(BackendError, match="backend 'x' failed in detect\\(\\): RuntimeError: CUDA out of memory"):
        PerceptionEngine(Exploding(), "x").evaluate(IMAGE, ["apple"], 0.5)


def test_answer_needs_a_backend_that_answers():
    class Talker(Scripted):
        def answer(self, image, question):
            return "  two apples  "

    assert not PerceptionEngine(Scripted([]), "x").answers_questions
    engine = PerceptionEngine(Talker([]), "x")
    assert engine.answers_questions
    text, ms = engine.answer(IMAGE, "what is there?")
    assert text == "two apples" and ms >= 0.0


def test_backend_calls_are_serialised():
    class Slow:
        active = 0
        overlap = False

        def detect(self, image, labels):
            Slow.active += 1
            Slow.overlap |= Slow.active > 1
            time.sleep(0.05)
            Slow.active -= 1
            return []

    engine = PerceptionEngine(Slow(), "slow")
    threads = [threading.Thread(target=engine.evaluate, args=(IMAGE, ["a"], 0.5)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not Slow.overlap


def test_answer_lists_only_what_was_asked():
    assert presence_answer([Presence("cup", False, 0.01, 0.1, 0)]) == "No: cup (0.01)."
    assert presence_answer([]) == ""
