"""Randomly initialised OWL models saved like real ones, built fully offline.

Tests and benchmarks point a backend's `model_path` at these directories, so the
real loading path runs without any download. Weights are random: outputs have
the right shapes and plumbing, not meaning.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPTokenizer,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2Processor,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTProcessor,
)
from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil
from transformers.models.owlvit.image_processing_pil_owlvit import OwlViTImageProcessorPil

START, END = "<|startoftext|>", "<|endoftext|>"
MAX_TEXT_TOKENS = 16  # what OWL models use

_FAMILIES: dict[str, tuple[type, type, type, type]] = {
    "owlv2": (Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor),
    "owlvit": (OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessorPil, OwlViTProcessor),
}


def byte_level_chars() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE (GPT-2, CLIP) uses, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def build_tokenizer(directory: Path) -> CLIPTokenizer:
    """A CLIP tokenizer with no merges (one token per byte) from vocab.json/merges.txt written here.

    It pads with "!" (id 0) like the real OWL tokenizers, and its end token has the
    largest id, which the text tower's pooling relies on.
    """
    directory.mkdir(parents=True, exist_ok=True)
    chars = byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab[START], vocab[END] = len(vocab), len(vocab) + 1
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(directory, pad_token="!", model_max_length=MAX_TEXT_TOKENS)


def tiny_config(family: str) -> Any:
    """Two layers, width 32, 96 px images in 16 px patches: a model that runs in milliseconds."""
    config_class = _FAMILIES[family][0]
    vocab_size = 2 * 256 + 2  # what build_tokenizer writes
    return config_class(
        text_config={
            "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": MAX_TEXT_TOKENS,
            "pad_token_id": 0, "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 96, "patch_size": 16,
        },
        projection_dim=32,
    )


def save_owl(directory: Path | str, family: str, config: Any, seed: int = 0) -> Path:
    """Save a randomly initialised `family` model of `config` with its processor; returns the directory."""
    config_class, model_class, image_processor_class, processor_class = _FAMILIES[family]
    if not isinstance(config, config_class):
        raise TypeError(f"{family} needs a {config_class.__name__}, got {type(config).__name__}")
    directory = Path(directory)
    torch.manual_seed(seed)
    model = model_class(config)
    # The default init makes the heads so large that scores and boxes saturate; small heads
    # give boxes around their own patches and scores inside (0, 1), as a trained model does.
    for head in (model.class_head, model.box_head):
        for layer in head.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=0.02)
                torch.nn.init.zeros_(layer.bias)
    model.save_pretrained(directory)
    side = config.vision_config.image_size
    size = {"height": side, "width": side}
    # The PIL image processors: the default ones need torchvision, which is not installed.
    image_processor = image_processor_class(size=size, crop_size=size)
    tokenizer = build_tokenizer(directory)
    processor_class(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def save_tiny_owl(directory: Path | str, family: str = "owlv2") -> Path:
    """A tiny random `family` ("owlv2" or "owlvit") model directory for `model_path`."""
    return save_owl(directory, family, tiny_config(family))
