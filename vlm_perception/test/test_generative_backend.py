"""Generative backend on tiny random models: yes/no scores, forced answers, batching, caches, loading errors.

Most tests use LLaVA; the exactness tests (scores, batching, answers) also run on
Idefics3, the family of the default model (SmolVLM), whose processor splits images
into tiles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from backend_probes import frame
from tiny_generative import save_tiny_idefics3, save_tiny_llava
from vlm_perception.backends.generative import DEFAULT_PRESENCE_PROMPT, GenerativeBackend
from vlm_perception.backends.registry import create_backend
from vlm_perception.core.engine import PerceptionEngine
from vlm_perception.core.errors import BackendError, BackendLoadError

YES_TOKENS = ("Yes", "yes", "ĠYes", "Ġyes")  # byte-level BPE writes a leading space as "Ġ"
NO_TOKENS = ("No", "no", "ĠNo", "Ġno")
LABELS = ["cat", "red cup on a table", "a dog"]  # tails of different lengths: exercises right padding


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def idefics3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(params=["llava", "idefics3"])
def family_dir(request: pytest.FixtureRequest, model_dir: Path, idefics3_dir: Path) -> Path:
    return {"llava": model_dir, "idefics3": idefics3_dir}[request.param]


@pytest.fixture
def backend(model_dir: Path) -> GenerativeBackend:
    # Device auto: CUDA where there is one. Few new tokens keep answers fast.
    return GenerativeBackend(model_path=str(model_dir), max_new_tokens=8)


def ids(backend: GenerativeBackend, tokens: Sequence[str]) -> list[int]:
    return backend.tokenizer.convert_tokens_to_ids(list(tokens))


def reference_inputs(backend: GenerativeBackend, image: np.ndarray, text: str) -> Any:
    """The processor's own inputs for one image and `text`, as a transformers user would build them."""
    conversation = [{"role": "user", "content": [{"type": "image", "image": Image.fromarray(image)},
                                                 {"type": "text", "text": text}]}]
    inputs = backend.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, return_tensors="pt")
    return inputs.to(backend.device)


def reference_score(backend: GenerativeBackend, image: np.ndarray, text: str) -> float:
    """P(yes) / (P(yes) + P(no)) from a softmax over the plain forward pass's next-token logits."""
    with torch.inference_mode():
        probabilities = backend.model(**reference_inputs(backend, image, text)).logits[0, -1].softmax(-1)
    yes = probabilities[ids(backend, YES_TOKENS)].sum()
    no = probabilities[ids(backend, NO_TOKENS)].sum()
    return float(yes / (yes + no))


def force_next_tokens(backend: GenerativeBackend, tokens: Sequence[str]) -> None:
    """Make the model give `tokens` equal probability and every other token next to none."""
    head = backend.model.lm_head
    bias = torch.full((head.out_features,), -1e4, device=head.weight.device)
    bias[ids(backend, tokens)] = 0.0
    with torch.no_grad():
        head.weight.zero_()
    head.bias = torch.nn.Parameter(bias)


class CallCounter:
    """Counts calls of a LLaVA backend's image processor (wrapped in place) and vision tower."""

    def __init__(self, backend: GenerativeBackend) -> None:
        self.preprocessed = 0
        self.encoded = 0
        processor = backend.processor
        image_processor = processor.image_processor
        counter = self

        class Counting:
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                counter.preprocessed += 1
                return image_processor(*args, **kwargs)

            def __getattr__(self, name: str) -> Any:
                return getattr(image_processor, name)

        processor.image_processor = Counting()
        self._handle = backend.model.model.vision_tower.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.encoded += 1

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def calls(backend: GenerativeBackend) -> Iterator[CallCounter]:
    counter = CallCounter(backend)
    yield counter
    counter.remove()


# presence scores


def test_loads_as_a_classify_only_backend_with_the_vocabularys_yes_and_no(backend: GenerativeBackend) -> None:
    assert backend.localizes is False
    assert backend.default_threshold == 0.5
    assert backend.yes_ids == sorted(ids(backend, YES_TOKENS))
    assert backend.no_ids == sorted(ids(backend, NO_TOKENS))


@pytest.mark.parametrize("shape, prompt", [((40, 60), DEFAULT_PRESENCE_PROMPT),
                                           ((50, 30), "Can you see {} here? Reply yes or no.")])
def test_scores_are_the_models_own_yes_no_probabilities(family_dir: Path, shape: tuple[int, int],
                                                        prompt: str) -> None:
    backend = GenerativeBackend(model_path=str(family_dir), presence_prompt=prompt)
    image = frame(*shape)
    detections = backend.detect(image, LABELS)

    assert [d.label for d in detections] == LABELS
    assert all(d.box is None for d in detections)
    scores = [d.score for d in detections]
    expected = [reference_score(backend, image, prompt.replace("{}", label)) for label in LABELS]
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert max(expected) - min(expected) > 1e-3 * max(expected)  # the prompts really differ


def test_forcing_yes_or_no_drives_presence_to_one_or_zero(backend: GenerativeBackend) -> None:
    image = frame(40, 60)
    force_next_tokens(backend, ["ĠYes"])
    assert [d.score for d in backend.detect(image, LABELS)] == pytest.approx([1.0] * 3, abs=1e-6)
    force_next_tokens(backend, ["no"])
    assert [d.score for d in backend.detect(image, LABELS)] == pytest.approx([0.0] * 3, abs=1e-6)


def test_every_spelling_of_yes_and_no_counts(backend: GenerativeBackend) -> None:
    force_next_tokens(backend, ["Yes", "yes", "ĠYes", "Ġno"])  # three yes tokens against one no
    assert backend.detect(frame(40, 60), ["cat"])[0].score == pytest.approx(0.75, abs=1e-6)


def test_a_batch_scores_like_one_label_at_a_time(family_dir: Path) -> None:
    backend = GenerativeBackend(model_path=str(family_dir))
    image = frame(40, 60)
    batched = [d.score for d in backend.detect(image, LABELS)]
    single = [backend.detect(image, [label])[0].score for label in LABELS]
    assert batched == pytest.approx(single, rel=1e-5, abs=1e-8)


def test_repeated_labels_give_one_detection_each(backend: GenerativeBackend) -> None:
    detections = backend.detect(frame(40, 60), ["cat", "dog", "cat"])
    assert [d.label for d in detections] == ["cat", "dog"]


def test_the_engine_reports_presence_without_targets(backend: GenerativeBackend) -> None:
    force_next_tokens(backend, ["Yes", "No"])
    engine = PerceptionEngine(backend, "generative")
    assert not engine.localizes and engine.answers_questions
    result = engine.evaluate(frame(40, 60), ["cat"], engine.default_threshold)
    assert result.presence[0].confidence == pytest.approx(0.5, abs=1e-6)
    assert result.presence[0].present and result.presence[0].count == 0 and result.targets == []


def test_detect_with_no_labels_is_empty(backend: GenerativeBackend) -> None:
    assert backend.detect(frame(8, 8), []) == []


@pytest.mark.parametrize("image", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32)])
def test_detect_rejects_images_that_are_not_rgb_uint8(backend: GenerativeBackend, image: np.ndarray) -> None:
    with pytest.raises(BackendError, match="RGB uint8"):
        backend.detect(image, ["cat"])


def test_inference_failures_become_backend_errors(backend: GenerativeBackend) -> None:
    def out_of_memory(*_: Any) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    backend.model.model.language_model.register_forward_pre_hook(out_of_memory)
    for call in (lambda image: backend.detect(image, ["cat"]), lambda image: backend.answer(image, "What?")):
        with pytest.raises(BackendError, match="generative inference failed on a 60x40 image: "
                                               "RuntimeError: CUDA out of memory"):
            call(frame(40, 60))


# caches, counted on the real image processor and vision tower


def test_a_frame_is_preprocessed_and_encoded_once(backend: GenerativeBackend, calls: CallCounter) -> None:
    image = frame(40, 60)
    backend.detect(image, ["cat"])
    backend.detect(image, ["dog", "red cup"])
    backend.answer(image, "What is on the table?")
    backend.detect(image, ["cat", "bird"])
    assert (calls.preprocessed, calls.encoded) == (1, 1)
    backend.detect(frame(40, 60), ["cat"])  # same pixels, new array: a new frame
    assert (calls.preprocessed, calls.encoded) == (2, 2)


def test_writeable_images_are_not_cached(backend: GenerativeBackend, calls: CallCounter) -> None:
    image = np.array(frame(40, 60))  # writeable: it could change in place between calls
    backend.detect(image, ["cat"])
    backend.detect(image, ["cat"])
    assert (calls.preprocessed, calls.encoded) == (2, 2)


def test_the_head_runs_again_after_another_frames_prefill(backend: GenerativeBackend, calls: CallCounter) -> None:
    # Some families keep position state from the latest prefill, so a cached head is reused only
    # while no other frame has been run; its preprocessing stays cached.
    image = frame(40, 60)
    first = backend.detect(image, LABELS)
    backend.detect(np.array(frame(50, 30, seed=1)), ["cat"])
    again = backend.detect(image, LABELS)
    assert (calls.preprocessed, calls.encoded) == (2, 3)
    assert [d.score for d in again] == pytest.approx([d.score for d in first], rel=1e-6)


def test_clear_caches_forgets_the_frame(backend: GenerativeBackend, calls: CallCounter) -> None:
    image = frame(40, 60)
    backend.detect(image, ["cat"])
    backend.clear_caches()
    backend.detect(image, ["cat"])
    assert (calls.preprocessed, calls.encoded) == (2, 2)


# answers


def test_answer_is_the_greedy_continuation_only(family_dir: Path) -> None:
    backend = GenerativeBackend(model_path=str(family_dir), max_new_tokens=8)
    image = frame(40, 60)
    question = "What is on the table?"
    inputs = reference_inputs(backend, image, question)
    with torch.inference_mode():
        generated = backend.model.generate(**inputs, max_new_tokens=backend.max_new_tokens, do_sample=False)
    expected = backend.tokenizer.decode(generated[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert backend.answer(image, question) == expected.strip()


@pytest.mark.parametrize("token, text", [("ĠYes", "Yes Yes Yes"), ("No", "NoNoNo")])
def test_answer_with_a_forced_token(model_dir: Path, token: str, text: str) -> None:
    backend = GenerativeBackend(model_path=str(model_dir), max_new_tokens=3)
    force_next_tokens(backend, [token])
    assert backend.answer(frame(40, 60), "Is there a cat?") == text


# loading and options


def test_registry_builds_it_with_options(model_dir: Path) -> None:
    backend = create_backend("generative", {"model": "", "model_path": str(model_dir), "device": "auto",
                                            "max_new_tokens": 5, "presence_prompt": "Any {}? yes or no"})
    assert isinstance(backend, GenerativeBackend)
    assert (backend.max_new_tokens, backend.presence_prompt) == (5, "Any {}? yes or no")
    assert backend.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_model_without_a_chat_template_is_refused(tmp_path: Path) -> None:
    directory = save_tiny_llava(tmp_path / "no-template", chat_template=None)
    with pytest.raises(BackendLoadError, match="has no chat template"):
        GenerativeBackend(model_path=str(directory))


def test_a_vocabulary_without_a_yes_token_is_refused(tmp_path: Path) -> None:
    directory = save_tiny_llava(tmp_path / "no-yes", words=("No", "no"))
    with pytest.raises(BackendLoadError, match="no single token spelling Yes or yes"):
        GenerativeBackend(model_path=str(directory))


def test_a_model_of_another_kind_is_named(tiny_owl_model_dir: Path) -> None:
    with pytest.raises(BackendLoadError, match="holds a 'owlv2' model, which is not an image-text-to-text model"):
        GenerativeBackend(model_path=str(tiny_owl_model_dir))


def test_missing_model_path_names_model_path(tmp_path: Path) -> None:
    with pytest.raises(BackendLoadError, match="model_path") as error:
        GenerativeBackend(model_path=str(tmp_path / "nowhere"))
    assert "\n" not in str(error.value)


def test_uncached_hub_model_fails_fast_and_names_model_path() -> None:
    with pytest.raises(BackendLoadError, match="no-such-org/no-such-vlm.*model_path"):
        GenerativeBackend(model="no-such-org/no-such-vlm")


def test_unknown_option_is_named(model_dir: Path) -> None:
    with pytest.raises(BackendLoadError, match="temperature"):
        GenerativeBackend(model_path=str(model_dir), temperature=0.7)


@pytest.mark.parametrize("option", [{"max_new_tokens": 0}, {"max_new_tokens": "many"},
                                    {"presence_prompt": "Is there a cat?"}, {"presence_prompt": "{} or {}?"},
                                    {"presence_prompt": "Is there {0}?"}])
def test_invalid_option_values_are_rejected(model_dir: Path, option: dict) -> None:
    with pytest.raises(BackendLoadError, match=next(iter(option))):
        GenerativeBackend(model_path=str(model_dir), **option)
