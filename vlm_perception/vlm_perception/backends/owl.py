"""OWLv2 and OWL-ViT open-vocabulary detection with cached image and text towers.

The model's forward() runs both towers for every call. Here the work is split
the way the architecture allows:

- per frame: the image tower, and the box head (boxes do not depend on text),
  kept in a FrameCache;
- per phrase: the text tower and projection, kept in a PhraseCache;
- per call: only the class head, which matches query embeddings to patches.

Images are preprocessed here with cv2/numpy instead of the transformers image
processors: in transformers 5 the default (fast) processors need torchvision
and the PIL ones resize through scipy, both slow or missing.

Precision (see precision.py): the image and text towers run in the chosen
format; the box and class heads stay fp32 (they are cheap, and boxes and scores
keep fp32 resolution, so thresholds do not move). With runtime openvino the
image tower (image_embedder) runs in OpenVINO, exported once and cached
(openvino_tower.py); the text tower and heads stay in PyTorch.

Not thread-safe: the model and caches are shared mutable state; the engine
serialises calls to detect().
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from transformers import AutoConfig, AutoProcessor, Owlv2ForObjectDetection, OwlViTForObjectDetection

from ..core.errors import BackendLoadError
from .base import Detection
from .caching import FrameCache, PhraseCache
from .common import (
    asked_phrases, inference, load_pretrained, option, pretrained_options, reject_unknown, resolve_device,
)
from .openvino_tower import ImageTowerRuntime
from .precision import check_precision, check_runtime, resolve_precision, torch_dtype

PHRASE_CACHE_SIZE = 1024
PAD_VALUE = 0.5  # OWLv2 pads with gray after rescaling to 0..1, as the original implementation does


@dataclass(frozen=True)
class _Family:
    name: str  # also the config's model_type
    default_model: str
    model_class: type
    pads_to_square: bool  # OWLv2 pads to a square; OWL-ViT stretches to its input size


FAMILIES: dict[str, _Family] = {
    "owlv2": _Family("owlv2", "google/owlv2-base-patch16-ensemble", Owlv2ForObjectDetection, True),
    "owlvit": _Family("owlvit", "google/owlvit-base-patch32", OwlViTForObjectDetection, False),
}


@dataclass(frozen=True)
class _Frame:
    image_feats: torch.Tensor  # (1, patches, hidden) on the model's device
    boxes: np.ndarray  # (patches, 4) x0, y0, x1, y1 in source pixels


class OwlBackend(ImageTowerRuntime):
    """Detects every phrase on an RGB uint8 image; one model family per instance.

    Not thread-safe (see the module docstring).
    """

    def __init__(
        self,
        family: str,
        *,
        model: str = "",
        model_path: str = "",
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "torch",
        nms_iou: float = 0.3,
        max_detections_per_label: int = 10,
        min_score: float = 0.01,
        **unknown: Any,
    ) -> None:
        if family not in FAMILIES:
            raise BackendLoadError(f"unknown OWL family '{family}'; use one of {', '.join(FAMILIES)}")
        self._family = FAMILIES[family]
        reject_unknown(family, unknown, "model, model_path, device, precision, runtime, nms_iou, "
                                        "max_detections_per_label, min_score")
        self.nms_iou = option("nms_iou", nms_iou, float, lambda v: 0.0 <= v <= 1.0, "between 0 and 1")
        self.max_detections_per_label = option(
            "max_detections_per_label", max_detections_per_label, int, lambda v: v >= 1, "at least 1"
        )
        self.min_score = option("min_score", min_score, float, lambda v: 0.0 <= v <= 1.0, "between 0 and 1")
        self.device = resolve_device(device)
        self.runtime = check_runtime(runtime, self.device.type)
        self.precision = resolve_precision(check_precision(precision), self.device)
        self.model, processor = self._load(model or self._family.default_model, model_path)
        self.tokenizer = processor.tokenizer
        self._configure_inputs(processor.image_processor)
        self._image_tower = self._openvino_image_tower(
            lambda model, pixels: model.image_embedder(pixel_values=pixels)[0]
        ) if self.runtime == "openvino" else None
        self._dtype = torch_dtype(self.precision)
        base = self.model.base_model
        for tower in (base.vision_model, self.model.layer_norm, base.text_model, base.text_projection):
            tower.to(self._dtype)
        self._phrases: PhraseCache[torch.Tensor] = PhraseCache(PHRASE_CACHE_SIZE)
        self._frames: FrameCache[_Frame] = FrameCache()

    @property
    def family(self) -> str:
        return self._family.name

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        """Up to max_detections_per_label boxes per label, at least the best one, best score first.

        Pass the same read-only array again to reuse the frame's image features.
        """
        phrases = asked_phrases(image, labels)
        if not phrases:
            return []
        with inference(self.family, image):
            frame = self._frames.get_or_compute(image, self._encode_frame)
            queries = torch.stack(self._phrases.get_many(phrases, self._embed_phrases))
            logits = self._class_logits(frame.image_feats, queries)
        scores = logits[0].sigmoid().float().cpu().numpy()  # (patches, phrases)
        detections: list[Detection] = []
        for column, phrase in enumerate(phrases):
            phrase_scores = scores[:, column]
            keep = select_boxes(
                frame.boxes, phrase_scores, self.nms_iou, self.max_detections_per_label, self.min_score
            )
            for i in keep:
                x0, y0, x1, y1 = (float(v) for v in frame.boxes[i])
                detections.append(Detection(phrase, float(phrase_scores[i]), (x0, y0, x1, y1)))
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections

    def clear_caches(self) -> None:
        """Forget cached frame features and phrase embeddings."""
        self._phrases.clear()
        self._frames.clear()

    def _load(self, model: str, model_path: str) -> tuple[torch.nn.Module, Any]:
        family = self._family.name

        def load(source: str, local_only: bool) -> tuple[torch.nn.Module, Any]:
            config = AutoConfig.from_pretrained(source, **pretrained_options(local_only))
            if config.model_type != family:
                raise BackendLoadError(
                    f"'{source}' holds a '{config.model_type}' model but backend '{family}' needs an "
                    f"'{family}' model; choose the matching backend or point model/model_path at one"
                )
            loaded = self._family.model_class.from_pretrained(source, config=config, **pretrained_options(local_only),
                                                              attn_implementation="sdpa")  # fused attention kernels
            processor = AutoProcessor.from_pretrained(source, **pretrained_options(local_only))
            return loaded.to(device=self.device, dtype=torch.float32).eval(), processor

        return load_pretrained(family, model, model_path, load)

    def _configure_inputs(self, image_processor: Any) -> None:
        vision = self.model.config.vision_config
        size = image_processor.size
        self._input_hw = (int(size.get("height", 0)), int(size.get("width", 0)))
        if self._input_hw != (vision.image_size, vision.image_size):
            raise BackendLoadError(
                f"the image processor resizes to {self._input_hw[1]}x{self._input_hw[0]} but the model takes "
                f"{vision.image_size}x{vision.image_size}; fix preprocessor settings in the model directory"
            )
        self._rescale = float(image_processor.rescale_factor)
        self._mean = np.asarray(image_processor.image_mean, dtype=np.float32)
        self._std = np.asarray(image_processor.image_std, dtype=np.float32)
        self._max_text_tokens = self.model.config.text_config.max_position_embeddings

    def _preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, size, size) float pixel values as the model family's processor makes them."""
        height, width = self._input_hw
        if self._family.pads_to_square:
            side = max(image.shape[:2])
            pixels = image.astype(np.float32) * self._rescale
            pixels = cv2.copyMakeBorder(
                pixels, 0, side - image.shape[0], 0, side - image.shape[1], cv2.BORDER_CONSTANT,
                value=(PAD_VALUE,) * 3,
            )
            # Like the original resize: blur before shrinking so fine detail does not alias.
            factor = side / max(height, width)
            if factor > 1.0:
                pixels = cv2.GaussianBlur(pixels, (0, 0), sigmaX=(factor - 1.0) / 2.0,
                                          borderType=cv2.BORDER_REFLECT_101)
            pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
        else:
            shrinking = image.shape[0] > height or image.shape[1] > width
            resized = cv2.resize(image, (width, height),
                                 interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
            pixels = resized.astype(np.float32) * self._rescale
        pixels = (pixels - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None].to(self.device)

    def _encode_pixels(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features (1, patches, hidden) and boxes (1, patches, 4) as normalised cx, cy, w, h, in fp32."""
        if self._image_tower is not None:
            (feature_map,) = self._image_tower(pixel_values)
        else:
            feature_map = self.model.image_embedder(pixel_values=pixel_values.to(self._dtype))[0].float()
        batch, rows, cols, hidden = feature_map.shape
        image_feats = feature_map.reshape(batch, rows * cols, hidden)
        return image_feats, self.model.box_predictor(image_feats, feature_map)

    def _encode_frame(self, image: np.ndarray) -> _Frame:
        image_feats, boxes = self._encode_pixels(self._preprocess(image))
        pixel_boxes = boxes_to_pixels(
            boxes[0].float().cpu().numpy(), image.shape[:2], padded_square=self._family.pads_to_square
        )
        return _Frame(image_feats, pixel_boxes)

    def _embed_phrases(self, phrases: list[str]) -> list[torch.Tensor]:
        """Normalised query embeddings, as forward() makes them (text tower, projection, L2 norm)."""
        tokens = self.tokenizer(
            phrases, padding="max_length", truncation=True, max_length=self._max_text_tokens, return_tensors="pt"
        ).to(self.device)
        base = self.model.base_model
        pooled = base.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        embeds = base.text_projection(pooled).float()
        embeds = embeds / torch.linalg.norm(embeds, ord=2, dim=-1, keepdim=True)
        return list(embeds.unbind(0))

    def _class_logits(self, image_feats: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(1, patches, phrases) logits for (phrases, dim) query embeddings."""
        logits, _ = self.model.class_predictor(image_feats, queries[None], None)
        return logits


class Owlv2Backend(OwlBackend):
    """OWLv2; `model` defaults to google/owlv2-base-patch16-ensemble."""

    def __init__(self, **options: Any) -> None:
        super().__init__("owlv2", **options)


class OwlVitBackend(OwlBackend):
    """OWL-ViT; `model` defaults to google/owlvit-base-patch32."""

    def __init__(self, **options: Any) -> None:
        super().__init__("owlvit", **options)


def boxes_to_pixels(boxes: np.ndarray, image_hw: tuple[int, int], padded_square: bool) -> np.ndarray:
    """Normalised (cx, cy, w, h) boxes -> (x0, y0, x1, y1) source pixels, clipped to the image.

    OWLv2 boxes are relative to the padded square, so both axes scale by max(H, W);
    OWL-ViT boxes are relative to the stretched image, so x scales by W and y by H.
    """
    height, width = image_hw
    scale_x, scale_y = (max(height, width),) * 2 if padded_square else (width, height)
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    xyxy = np.stack([(cx - w / 2) * scale_x, (cy - h / 2) * scale_y, (cx + w / 2) * scale_x, (cy + h / 2) * scale_y],
                    axis=-1)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
    return xyxy


def select_boxes(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int,
                 min_score: float) -> list[int]:
    """Indices kept by NMS among visible boxes scoring >= min_score; the best one is kept even below it.

    Boxes with no area in the image (OWLv2 also predicts in its padding) are left out
    unless there is nothing else.
    """
    visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    pool = np.flatnonzero(visible) if visible.any() else np.arange(len(scores))
    candidates = pool[scores[pool] >= min_score]
    if candidates.size == 0:
        candidates = pool[[int(np.argmax(scores[pool]))]]
    return [int(candidates[i]) for i in nms(boxes[candidates], scores[candidates], iou_threshold, max_keep)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> list[int]:
    """Greedy non-maximum suppression on xyxy boxes; indices best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod((bottom_right - top_left).clip(min=0), axis=1)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return keep
