"""Zero-shot presence with CLIP or SigLIP: one score per phrase for the whole image, no boxes.

The image tower runs once per frame (FrameCache) and the text tower once per
new phrase (PhraseCache, every missing phrase in one batch), so a standing query
on a new frame costs one image forward plus a dot product per phrase.

Each phrase is embedded with several prompt templates ("a photo of a {}." ...):
the normalised embeddings are averaged and renormalised (CLIP's prompt
ensembling), which is steadier than any single wording.

Scores, comparable across calls because a phrase is never scored against the
other phrases asked:

- CLIP was trained with a softmax over rival captions, and a lone phrase has
  none, so each phrase competes with a fixed set of background phrases
  (`negatives`: "wall", "floor", ...): score = the phrase's share of the softmax
  over [phrase, negatives...] of logit_scale * cosine. With K negatives a phrase
  no better than the background scores about 1/(K+1); a phrase equal to a
  negative scores at most 0.5. default_threshold 0.5: the phrase is more likely
  than all the background phrases together.
- SigLIP was trained with a per-pair sigmoid, so its score is the model's own
  probability sigmoid(logit_scale * cosine + logit_bias); negatives are not
  used. default_threshold 0.1: SigLIP's learned bias encodes a prior of one
  match per batch, so true matches often score 0.1-0.5 and unrelated phrases
  near 0.

SigLIP text is padded to the full text length with no attention mask, the way
SigLIP was trained (its text tower pools the last position). SigLIP's own
tokenizer needs the sentencepiece and protobuf packages.

Images are preprocessed here, not with the transformers image processors (in
transformers 5 the default ones need torchvision, which is not installed),
using the sizes, resampling filter, mean, std and rescale factor of the saved
processor. The resize is torch's antialiased resampling of uint8 images: the
saved (PIL) processor's filter with the same antialiasing, 5x faster than PIL
on 2 cores. It matches PIL to one grey level on most shapes; where the two
round and clip between their passes in a different order, fine high-contrast
detail can differ by a few levels (mean under 0.3). cv2 has no antialiased
bicubic: INTER_AREA differs from PIL by up to 13 levels on a camera frame.

Precision (see precision.py): the image and text towers run in the chosen
format; embeddings are normalised and scored in fp32, so thresholds do not
move. With runtime openvino the image tower (get_image_features) runs in
OpenVINO, exported once and cached (openvino_tower.py); the text tower stays in
PyTorch (it runs once per new phrase).

Not thread-safe: the model and caches are shared mutable state; the engine
serialises calls to detect().
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoTokenizer, CLIPModel, SiglipModel
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from ..core.errors import BackendLoadError
from .base import Detection
from .caching import FrameCache, PhraseCache
from .common import (
    asked_phrases, first_line, inference, load_pretrained, option, pretrained_options, reject_unknown, resolve_device,
)
from .openvino_tower import ImageTowerRuntime
from .precision import check_precision, check_runtime, resolve_precision, torch_dtype

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
PHRASE_CACHE_SIZE = 1024
# A few of CLIP's ImageNet templates that suit a robot's camera; phrases come without articles ("red cup").
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
)
# What a camera sees when the asked-for object is not there.
DEFAULT_NEGATIVES = ("wall", "floor", "ceiling", "empty table", "empty room", "plain background")
_RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}  # PIL's BILINEAR and BICUBIC; all the families use bicubic
_OWL_TYPES = ("owlv2", "owlvit")  # model types that are also backend names


@dataclass(frozen=True)
class _Family:
    name: str  # also the config's model_type
    model_class: type
    image_processor_class: type
    softmax_vs_negatives: bool  # CLIP; SigLIP scores each pair with its own sigmoid
    default_threshold: float  # see the module docstring


FAMILIES: dict[str, _Family] = {
    "clip": _Family("clip", CLIPModel, CLIPImageProcessorPil, True, 0.5),
    "siglip": _Family("siglip", SiglipModel, SiglipImageProcessorPil, False, 0.1),
}


@dataclass(frozen=True)
class _Geometry:
    """How the saved image processor maps an image to the model's input."""
    shortest_edge: int  # resize so the short side is this (CLIP); 0: resize to `resize_hw` (SigLIP)
    resize_hw: tuple[int, int]
    crop_hw: Optional[tuple[int, int]]
    mode: str  # torch interpolation mode
    rescale: float
    mean: torch.Tensor  # (1, 3, 1, 1), or (1, 1, 1, 1) for one value for all channels
    std: torch.Tensor


class ClipBackend(ImageTowerRuntime):
    """Scores how present each phrase is in an RGB uint8 image with a CLIP or SigLIP model.

    One Detection per phrase, in the order asked, box None. Not thread-safe
    (see the module docstring).
    """

    localizes = False

    def __init__(
        self,
        *,
        model: str = "",
        model_path: str = "",
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "torch",
        templates: Optional[Sequence[str]] = None,
        negatives: Optional[Sequence[str]] = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("clip", unknown, "model, model_path, device, precision, runtime, templates, negatives")
        self.templates: tuple[str, ...] = (
            DEFAULT_TEMPLATES if templates is None else
            option("templates", templates, _strings, lambda v: all(_is_template(t) for t in v),
                   'a non-empty list of strings, each with one "{}" where the phrase goes')
        )
        chosen_negatives: Optional[tuple[str, ...]] = None if negatives is None else option(
            "negatives", negatives, _strings, lambda v: all(n.strip() for n in v), "a non-empty list of phrases")
        self.device = resolve_device(device)
        self.runtime = check_runtime(runtime, self.device.type)
        self.precision = resolve_precision(check_precision(precision), self.device)
        self.model, self.tokenizer, self._family, self._geometry = self._load(model or DEFAULT_MODEL, model_path)
        self._image_tower = self._openvino_image_tower(
            lambda model, pixels: model.get_image_features(pixel_values=pixels).pooler_output
        ) if self.runtime == "openvino" else None
        self._dtype = torch_dtype(self.precision)
        # The towers only: logit_scale and logit_bias stay fp32, as scores and thresholds depend on them.
        for name in ("vision_model", "visual_projection", "text_model", "text_projection"):
            tower = getattr(self.model, name, None)
            if tower is not None:
                tower.to(self._dtype)
        if not self._family.softmax_vs_negatives and chosen_negatives is not None:
            raise BackendLoadError(
                "option negatives applies to CLIP models only: a SigLIP model scores each phrase with its own "
                "calibrated probability; remove the option or load a CLIP model")
        self.default_threshold = self._family.default_threshold
        self._max_text_tokens = self.model.config.text_config.max_position_embeddings
        self._phrases: PhraseCache[torch.Tensor] = PhraseCache(PHRASE_CACHE_SIZE)
        self._frames: FrameCache[torch.Tensor] = FrameCache()
        self.negatives: tuple[str, ...] = ()
        self._negative_embeds: Optional[torch.Tensor] = None
        if self._family.softmax_vs_negatives:
            self.negatives = tuple(dict.fromkeys(chosen_negatives or DEFAULT_NEGATIVES))
            with torch.inference_mode():
                self._negative_embeds = torch.stack(self._embed_phrases(list(self.negatives)))

    @property
    def family(self) -> str:
        return self._family.name

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        """One Detection per distinct label, in the order asked; scores as the module docstring says.

        Pass the same read-only array again to reuse the frame's image features.
        """
        phrases = asked_phrases(image, labels)
        if not phrases:
            return []
        with inference(self.family, image):
            image_embed = self._frames.get_or_compute(image, self._encode_frame)
            phrase_embeds = torch.stack(self._phrases.get_many(phrases, self._embed_phrases))
            scores = self._scores(image_embed, phrase_embeds).float().cpu().numpy()
        return [Detection(phrase, float(score), None) for phrase, score in zip(phrases, scores)]

    def clear_caches(self) -> None:
        """Forget cached frame features and phrase embeddings (the negatives stay)."""
        self._phrases.clear()
        self._frames.clear()

    def _scores(self, image_embed: torch.Tensor, phrase_embeds: torch.Tensor) -> torch.Tensor:
        """(phrases,) scores in 0..1 from a normalised (dim,) image and (phrases, dim) phrase embeddings."""
        scale = self.model.logit_scale.float().exp()
        logits = scale * (phrase_embeds @ image_embed)
        if self._negative_embeds is None:
            return torch.sigmoid(logits + self.model.logit_bias.float())
        # softmax over [phrase, negatives...] taken at the phrase == sigmoid(phrase - logsumexp(negatives))
        background = torch.logsumexp(scale * (self._negative_embeds @ image_embed), dim=0)
        return torch.sigmoid(logits - background)

    def _load(self, model: str, model_path: str) -> tuple[torch.nn.Module, Any, _Family, _Geometry]:
        def load(source: str, local_only: bool) -> tuple[torch.nn.Module, Any, _Family, _Geometry]:
            config = AutoConfig.from_pretrained(source, **pretrained_options(local_only))
            family = FAMILIES.get(config.model_type)
            if family is None:
                raise BackendLoadError(f"'{source}' holds a '{config.model_type}' model but backend 'clip' needs a "
                                       f"CLIP or SigLIP model (model type 'clip' or 'siglip'); "
                                       f"{_fitting_backend(config.model_type)}")
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, **pretrained_options(local_only))
            except ImportError as exc:
                raise BackendLoadError(
                    f"the tokenizer of '{source}' needs a package that is not installed ({first_line(exc)}); "
                    "install it (SigLIP tokenizers: pip install sentencepiece protobuf)") from exc
            image_processor = family.image_processor_class.from_pretrained(source, **pretrained_options(local_only))
            loaded = family.model_class.from_pretrained(source, config=config, **pretrained_options(local_only),
                                                         attn_implementation="sdpa")  # fused attention kernels
            geometry = _geometry(image_processor, config.vision_config.image_size)
            return loaded.to(device=self.device, dtype=torch.float32).eval(), tokenizer, family, geometry

        return load_pretrained("CLIP/SigLIP", model, model_path, load)

    def _preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, size, size) float pixel values as the saved image processor makes them."""
        geometry = self._geometry
        height, width = image.shape[:2]
        if geometry.shortest_edge:
            short, long = sorted((height, width))
            new_long = int(geometry.shortest_edge * long / short)  # int() truncates, as transformers does
            size = (new_long, geometry.shortest_edge) if height > width else (geometry.shortest_edge, new_long)
        else:
            size = geometry.resize_hw
        # torch.from_numpy shares memory and warns on read-only arrays; the copy is small next to the model
        pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None]
        if size != (height, width):
            pixels = F.interpolate(pixels, size=size, mode=geometry.mode, antialias=True, align_corners=False)
        if geometry.crop_hw is not None:
            crop_h, crop_w = geometry.crop_hw
            top, left = (size[0] - crop_h) // 2, (size[1] - crop_w) // 2
            pixels = pixels[:, :, top:top + crop_h, left:left + crop_w]
        pixels = (pixels.float() * geometry.rescale - geometry.mean) / geometry.std
        return pixels.contiguous().to(self.device)

    def _encode_frame(self, image: np.ndarray) -> torch.Tensor:
        """The normalised (dim,) image embedding."""
        pixels = self._preprocess(image)
        if self._image_tower is not None:
            (features,) = self._image_tower(pixels)
        else:
            features = self.model.get_image_features(pixel_values=pixels.to(self._dtype)).pooler_output
        return F.normalize(features[0].float(), dim=-1)

    def _embed_phrases(self, phrases: list[str]) -> list[torch.Tensor]:
        """Normalised (dim,) embeddings: each phrase's template embeddings averaged, in one text-tower batch."""
        prompts = [template.format(phrase) for phrase in phrases for template in self.templates]
        if self._family.softmax_vs_negatives:
            tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=self._max_text_tokens,
                                    return_tensors="pt")
            inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        else:  # SigLIP: full length, no mask, as trained
            tokens = self.tokenizer(prompts, padding="max_length", truncation=True,
                                    max_length=self._max_text_tokens, return_tensors="pt")
            inputs = {"input_ids": tokens["input_ids"]}
        features = self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()}).pooler_output
        per_template = F.normalize(features.float(), dim=-1).reshape(len(phrases), len(self.templates), -1)
        return list(F.normalize(per_template.mean(dim=1), dim=-1).unbind(0))


def _strings(value: Any) -> tuple[str, ...]:
    """A non-empty list of strings as a tuple; ValueError for anything else (a lone string included)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError("not a non-empty list")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("not all strings")
    return tuple(value)


def _is_template(template: str) -> bool:
    """True if `template` has one "{}" and no other format fields."""
    try:
        return template.count("{}") == 1 and template.format("x") == template.replace("{}", "x")
    except (IndexError, KeyError, ValueError):
        return False


def _fitting_backend(model_type: str) -> str:
    if model_type in _OWL_TYPES:
        return f"use backend '{model_type}' for it"
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "use backend 'generative' for it"
    return "no built-in backend takes it; point model/model_path at a CLIP or SigLIP model"


def _geometry(image_processor: Any, model_side: int) -> _Geometry:
    """The saved processor's resize, crop and normalisation; BackendLoadError if it cannot feed the model."""
    def fail(problem: str) -> BackendLoadError:
        return BackendLoadError(f"the saved image processor {problem}; fix preprocessor_config.json in the model "
                                f"directory (the model takes {model_side}x{model_side} images)")

    size = {key: int(value) for key, value in dict(image_processor.size).items() if value}
    if not image_processor.do_resize:
        raise fail("does not resize")
    if set(size) == {"shortest_edge"}:
        shortest_edge, resize_hw = size["shortest_edge"], (size["shortest_edge"],) * 2  # the smallest it makes
    elif set(size) == {"height", "width"}:
        shortest_edge, resize_hw = 0, (size["height"], size["width"])
    else:
        raise fail(f"resizes by {size}; this backend reproduces shortest_edge or height and width")
    crop_hw = None
    if image_processor.do_center_crop:
        crop_hw = (int(image_processor.crop_size["height"]), int(image_processor.crop_size["width"]))
        if crop_hw[0] > resize_hw[0] or crop_hw[1] > resize_hw[1]:
            raise fail(f"crops {crop_hw[1]}x{crop_hw[0]} out of images it may resize to {resize_hw[1]}x{resize_hw[0]}")
    elif shortest_edge:
        raise fail("resizes the short side without a centre crop, which leaves images non-square")
    final_hw = crop_hw or resize_hw
    if final_hw != (model_side, model_side):
        raise fail(f"makes {final_hw[1]}x{final_hw[0]} images")
    mode = _RESAMPLE_MODES.get(int(image_processor.resample))
    if mode is None:
        raise fail(f"resamples with PIL filter {int(image_processor.resample)}; use 2 (bilinear) or 3 (bicubic)")
    rescale = float(image_processor.rescale_factor) if image_processor.do_rescale else 1.0
    mean, std = (image_processor.image_mean, image_processor.image_std) if image_processor.do_normalize else (0., 1.)
    # a scalar or one value per channel, broadcast over (1, 3, H, W)
    return _Geometry(shortest_edge, resize_hw, crop_hw, mode, rescale,
                     torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1),
                     torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))
