"""CLIP / SigLIP zero-shot presence backend on tiny random models: scores, caches, preprocessing, loading errors."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from backend_probes import CallCounter, frame
from tiny_clip import MAX_TEXT_TOKENS, SIGLIP_LOGIT_BIAS, SIGLIP_LOGIT_SCALE, save_tiny_clip
from vlm_perception.backends.base import Detection, default_threshold, localizes
from vlm_perception.backends.clip import DEFAULT_TEMPLATES, ClipBackend
from vlm_perception.backends.registry import create_backend
from vlm_perception.core.errors import BackendError, BackendLoadError

FAMILIES = ("clip", "siglip")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {family: save_tiny_clip(tmp_path_factory.mktemp(f"tiny-{family}"), family) for family in FAMILIES}


@pytest.fixture(params=FAMILIES)
def backend(request: pytest.FixtureRequest, model_dirs: dict[str, Path]) -> ClipBackend:
    return ClipBackend(model_path=str(model_dirs[request.param]), device="cpu")


@pytest.fixture
def clip(model_dirs: dict[str, Path]) -> ClipBackend:
    return ClipBackend(model_path=str(model_dirs["clip"]), device="cpu")


def scores(backend: ClipBackend, image: np.ndarray, labels: list[str]) -> dict[str, float]:
    return {d.label: d.score for d in backend.detect(image, labels)}


@pytest.fixture
def towers(backend: ClipBackend) -> Iterator[tuple[CallCounter, CallCounter]]:
    """(text tower, image tower) call counters, attached after the backend embedded its negatives."""
    text, vision = CallCounter(backend.model.text_model), CallCounter(backend.model.vision_model)
    yield text, vision
    text.remove()
    vision.remove()


# detect


@pytest.mark.parametrize("shape", [(60, 120), (120, 60), (20, 20)])
def test_detect_gives_one_unboxed_detection_per_label(backend: ClipBackend, shape: tuple[int, int]) -> None:
    labels = ["cat", "red cup", "cat", "laptop"]
    detections = backend.detect(frame(*shape), labels)
    assert [d.label for d in detections] == ["cat", "red cup", "laptop"]
    assert all(isinstance(d, Detection) and d.box is None and 0.0 <= d.score <= 1.0 for d in detections)
    assert len({d.score for d in detections}) == 3


def test_backend_says_it_does_not_localize_and_names_its_threshold(model_dirs: dict[str, Path]) -> None:
    clip = ClipBackend(model_path=str(model_dirs["clip"]))
    siglip = ClipBackend(model_path=str(model_dirs["siglip"]))
    assert not localizes(clip) and not localizes(siglip)
    assert (default_threshold(clip), default_threshold(siglip)) == (0.5, 0.1)
    assert (clip.family, siglip.family) == ("clip", "siglip")


def test_detect_with_no_labels_is_empty(backend: ClipBackend) -> None:
    assert backend.detect(frame(32, 32), []) == []


@pytest.mark.parametrize("image", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                   np.zeros((0, 10, 3), np.uint8)])
def test_detect_rejects_images_that_are_not_rgb_uint8(backend: ClipBackend, image: np.ndarray) -> None:
    with pytest.raises(BackendError, match="RGB uint8"):
        backend.detect(image, ["cat"])


def test_inference_failure_is_a_backend_error(clip: ClipBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(clip.model, "get_image_features", out_of_memory)
    with pytest.raises(BackendError, match="clip inference failed on a 40x30 image: RuntimeError: out of memory"):
        clip.detect(frame(30, 40), ["cat"])


# scores


def test_clip_score_is_the_phrase_share_against_negatives_over_averaged_templates(model_dirs: dict[str, Path]) -> None:
    templates = ["a photo of a {}.", "{}", "a blurry photo of the {}."]
    negatives = ["wall", "floor"]
    backend = ClipBackend(model_path=str(model_dirs["clip"]), templates=templates, negatives=negatives)
    image = frame(40, 56)
    model = backend.model

    def embed(phrase: str) -> torch.Tensor:  # one prompt at a time: no padding, no batching
        per_template = []
        for template in templates:
            tokens = backend.tokenizer([template.format(phrase)], return_tensors="pt")
            per_template.append(F.normalize(model.get_text_features(**tokens).pooler_output[0], dim=-1))
        return F.normalize(torch.stack(per_template).mean(0), dim=-1)

    with torch.no_grad():
        pixels = backend._preprocess(image)
        image_embed = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output[0], dim=-1)
        logits = torch.stack([embed(p) for p in ["cat", *negatives]]) @ image_embed * model.logit_scale.exp()
        expected = logits.softmax(dim=0)[0].item()
        single_template = F.normalize(model.get_text_features(
            **backend.tokenizer(["a photo of a cat."], return_tensors="pt")).pooler_output[0], dim=-1)
    assert scores(backend, image, ["cat"])["cat"] == pytest.approx(expected, abs=1e-5)
    assert not torch.allclose(single_template, embed("cat"), atol=1e-3)  # the templates do change the embedding


def siglip_with_sentencepiece(source: Path, directory: Path) -> Path:
    """A copy of the SigLIP model directory with a real SiglipTokenizer (sentencepiece) trained here."""
    spm = pytest.importorskip("sentencepiece", reason="SigLIP's own tokenizer needs the sentencepiece package")
    pytest.importorskip("google.protobuf", reason="SigLIP's own tokenizer needs the protobuf package")
    from transformers import SiglipTokenizer

    directory.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (directory / name).write_bytes((source / name).read_bytes())
    model = io.BytesIO()
    sentences = ["a photo of a cat.", "a photo of the dog on a mat.", "a blurry photo of a red cup."] * 10
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=40,
                                   hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   minloglevel=2)
    (directory / "spiece.model").write_bytes(model.getvalue())
    SiglipTokenizer(str(directory / "spiece.model")).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("tokenizer", ["byte-level BPE", "sentencepiece"])
def test_siglip_score_is_its_own_sigmoid_probability(model_dirs: dict[str, Path], tmp_path: Path,
                                                     tokenizer: str) -> None:
    directory = model_dirs["siglip"]
    if tokenizer == "sentencepiece":
        directory = siglip_with_sentencepiece(directory, tmp_path / "siglip-spm")
    backend = ClipBackend(model_path=str(directory), templates=["a photo of a {}.", "{}"])
    assert (type(backend.tokenizer).__name__ == "SiglipTokenizer") == (tokenizer == "sentencepiece")
    image = frame(40, 56)
    model = backend.model
    with torch.no_grad():
        image_embed = F.normalize(
            model.get_image_features(pixel_values=backend._preprocess(image)).pooler_output[0], dim=-1)
        per_template = []
        for prompt in ["a photo of a cat.", "cat"]:  # SigLIP text: padded to full length, no attention mask
            tokens = backend.tokenizer([prompt], padding="max_length", max_length=MAX_TEXT_TOKENS, return_tensors="pt")
            per_template.append(F.normalize(
                model.get_text_features(input_ids=tokens["input_ids"]).pooler_output[0], dim=-1))
        text_embed = F.normalize(torch.stack(per_template).mean(0), dim=-1)
        cosine = (text_embed @ image_embed).item()
    expected = 1 / (1 + np.exp(-(SIGLIP_LOGIT_SCALE * cosine + SIGLIP_LOGIT_BIAS)))
    assert scores(backend, image, ["cat"])["cat"] == pytest.approx(expected, abs=1e-5)


def test_a_phrase_scores_the_same_whatever_else_is_asked(model_dirs: dict[str, Path], backend: ClipBackend) -> None:
    image = frame(48, 64)
    alone = scores(backend, image, ["cat"])["cat"]
    fresh = ClipBackend(model_path=str(model_dirs[backend.family]))  # nothing cached: "cat" embedded in a batch
    together = scores(fresh, image, ["a long phrase about a dog on a mat", "cat", "zebra"])
    assert together["cat"] == pytest.approx(alone, abs=1e-5)
    assert scores(backend, image, ["cat", "zebra"])["cat"] == alone


def test_a_phrase_equal_to_a_negative_ties_with_it(model_dirs: dict[str, Path]) -> None:
    image = frame(48, 64)
    lone = ClipBackend(model_path=str(model_dirs["clip"]), negatives=["wall"])
    assert scores(lone, image, ["wall"])["wall"] == pytest.approx(0.5, abs=1e-5)  # a two-way tie

    several = ClipBackend(model_path=str(model_dirs["clip"]), negatives=["wall", "floor", "sky"])
    wall, floor, sky = several._negative_embeds
    with torch.no_grad():
        image_embed = several._encode_frame(image)
        logits = torch.stack([wall, wall, floor, sky]) @ image_embed * several.model.logit_scale.exp()
    share = logits.softmax(dim=0)[0].item()
    assert scores(several, image, ["wall"])["wall"] == pytest.approx(share, abs=1e-5)
    assert share < 0.5
    assert scores(several, image, ["cat"])["cat"] != pytest.approx(scores(lone, image, ["cat"])["cat"], abs=1e-3)


# caches, counted on the real encoder modules


def test_text_tower_runs_once_per_new_phrase_in_one_batch(backend: ClipBackend,
                                                          towers: tuple[CallCounter, CallCounter]) -> None:
    text, _ = towers
    per_phrase = len(DEFAULT_TEMPLATES)
    image = frame(48, 64)
    backend.detect(image, ["a", "b"])
    assert text.batches == [2 * per_phrase]
    backend.detect(image, ["b", "c"])
    assert text.batches == [2 * per_phrase, per_phrase]  # only "c" was encoded
    backend.detect(frame(48, 64, seed=1), ["c", "a", "b"])
    assert text.batches == [2 * per_phrase, per_phrase]


def test_negatives_are_embedded_once_at_load(model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    original = ClipBackend._embed_phrases

    def counting(self: ClipBackend, phrases: list[str]) -> list[torch.Tensor]:
        batches.append(len(phrases))
        return original(self, phrases)

    monkeypatch.setattr(ClipBackend, "_embed_phrases", counting)
    backend = ClipBackend(model_path=str(model_dirs["clip"]), negatives=["wall", "floor", "wall"])
    assert backend.negatives == ("wall", "floor")
    assert batches == [2]
    for seed in range(3):
        backend.detect(frame(32, 32, seed), ["cat"])
    assert batches == [2, 1]


def test_image_tower_runs_once_per_frame(backend: ClipBackend, towers: tuple[CallCounter, CallCounter]) -> None:
    _, vision = towers
    image = frame(48, 64)
    for labels in (["a"], ["b", "c"], ["a", "d"]):
        backend.detect(image, labels)
    assert vision.batches == [1]
    backend.detect(frame(48, 64), ["a"])  # same pixels, new array: a new frame
    assert vision.batches == [1, 1]


def test_writeable_images_are_not_cached(clip: ClipBackend) -> None:
    vision = CallCounter(clip.model.vision_model)
    image = np.array(frame(48, 64))  # writeable: it could change in place between calls
    clip.detect(image, ["a"])
    clip.detect(image, ["a"])
    vision.remove()
    assert len(vision.batches) == 2


def test_clear_caches_forgets_frames_and_phrases(backend: ClipBackend,
                                                 towers: tuple[CallCounter, CallCounter]) -> None:
    text, vision = towers
    image = frame(48, 64)
    before = backend.detect(image, ["a"])
    backend.clear_caches()
    assert backend.detect(image, ["a"]) == before
    assert (len(text.batches), len(vision.batches)) == (2, 2)


# preprocessing, against the saved processor's maths computed here with PIL and numpy


def camera_like(height: int, width: int) -> np.ndarray:
    """Shading, fine texture and sensor noise: detail that a resize without antialiasing would alias."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    smooth = np.stack([x / width, y / height, (np.sin(x / 2.5) * np.cos(y / 1.5) + 1) / 2], axis=-1) * 200
    noisy = smooth + np.random.default_rng(3).normal(0, 5, smooth.shape)
    image = noisy.clip(0, 255).astype(np.uint8)
    image.flags.writeable = False
    return image


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(48, 72), (72, 48), (20, 26), (32, 32), (300, 400)])
def test_preprocessing_matches_the_saved_processor(model_dirs: dict[str, Path], family: str,
                                                   shape: tuple[int, int]) -> None:
    directory = model_dirs[family]
    saved = json.loads((directory / "preprocessor_config.json").read_text())
    image = camera_like(*shape)
    height, width = shape
    if family == "clip":  # short side to `shortest_edge`, long side truncated to int, then a centre crop
        short = saved["size"]["shortest_edge"]
        new_hw = (int(short * height / width), short) if height > width else (short, int(short * width / height))
    else:
        new_hw = (saved["size"]["height"], saved["size"]["width"])
    expected = np.asarray(Image.fromarray(image).resize(new_hw[::-1], resample=saved["resample"]), np.float64)
    if family == "clip":
        crop_h, crop_w = saved["crop_size"]["height"], saved["crop_size"]["width"]
        top, left = (new_hw[0] - crop_h) // 2, (new_hw[1] - crop_w) // 2
        expected = expected[top:top + crop_h, left:left + crop_w]
    expected = (expected * saved["rescale_factor"] - saved["image_mean"]) / saved["image_std"]

    backend = ClipBackend(model_path=str(directory))
    pixels = backend._preprocess(image)[0].numpy().transpose(1, 2, 0)
    assert pixels.shape == expected.shape == (32, 32, 3)
    # in grey levels: torch's antialiased resampling and PIL's round and clip at different steps
    levels = np.abs(pixels - expected) * np.array(saved["image_std"]) / saved["rescale_factor"]
    assert levels.max() <= 2.01
    assert levels.mean() < 0.25


# loading and options


def test_loads_through_the_registry_with_options(model_dirs: dict[str, Path]) -> None:
    backend = create_backend("clip", {"model": "", "model_path": str(model_dirs["clip"]), "device": "cpu",
                                      "templates": ["{}"], "negatives": ["wall"]})
    assert isinstance(backend, ClipBackend)
    assert (backend.templates, backend.negatives) == (("{}",), ("wall",))


def test_other_model_types_name_the_backend_that_fits(tiny_owl_model_dir: Path) -> None:
    with pytest.raises(BackendLoadError, match="holds a 'owlv2' model but backend 'clip' needs a CLIP or SigLIP model"
                       r".*use backend 'owlv2'"):
        ClipBackend(model_path=str(tiny_owl_model_dir))


def test_missing_model_path_names_model_path(tmp_path: Path) -> None:
    with pytest.raises(BackendLoadError, match="model_path .* no such directory"):
        ClipBackend(model_path=str(tmp_path / "nothing"))


def test_uncached_hub_model_fails_fast_and_names_model_path() -> None:
    with pytest.raises(BackendLoadError, match="cannot load CLIP/SigLIP model from 'no-org/no-such-clip'.*model_path"):
        ClipBackend(model="no-org/no-such-clip")


def test_a_tokenizer_needing_a_missing_package_says_what_to_install(model_dirs: dict[str, Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def needs_sentencepiece(*args: object, **kwargs: object) -> None:
        raise ImportError("SiglipTokenizer requires the SentencePiece library but it was not found")

    monkeypatch.setattr("vlm_perception.backends.clip.AutoTokenizer.from_pretrained", needs_sentencepiece)
    with pytest.raises(BackendLoadError, match="SentencePiece library.*pip install sentencepiece protobuf"):
        ClipBackend(model_path=str(model_dirs["siglip"]))


def test_a_processor_that_cannot_feed_the_model_is_refused(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = tmp_path / "bad-crop"
    directory.mkdir()
    for source in model_dirs["clip"].iterdir():
        (directory / source.name).write_bytes(source.read_bytes())
    saved = json.loads((directory / "preprocessor_config.json").read_text())
    saved["crop_size"] = {"height": 24, "width": 24}
    (directory / "preprocessor_config.json").write_text(json.dumps(saved))
    with pytest.raises(BackendLoadError, match="makes 24x24 images.*model takes 32x32"):
        ClipBackend(model_path=str(directory))


def test_unknown_option_is_named(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(BackendLoadError, match="does not take option\\(s\\) nms_iou; it takes .*templates, negatives"):
        create_backend("clip", {"model_path": str(model_dirs["clip"]), "nms_iou": 0.5})


@pytest.mark.parametrize("option", [
    {"templates": "a photo of a {}."}, {"templates": []}, {"templates": ["a photo"]}, {"templates": ["{} and {}"]},
    {"templates": ["a {0} photo {}"]}, {"templates": [3]}, {"negatives": []}, {"negatives": ["wall", " "]},
    {"negatives": "wall"},
])
def test_invalid_option_values_are_rejected(option: dict, model_dirs: dict[str, Path]) -> None:
    name = next(iter(option))
    with pytest.raises(BackendLoadError, match=f"option {name}=.* is invalid: it must be"):
        ClipBackend(model_path=str(model_dirs["clip"]), **option)


def test_negatives_are_refused_for_siglip(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(BackendLoadError, match="negatives applies to CLIP models only"):
        ClipBackend(model_path=str(model_dirs["siglip"]), negatives=["wall"])
