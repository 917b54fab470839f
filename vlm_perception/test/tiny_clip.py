"""Randomly initialised CLIP and SigLIP models saved like real ones, built fully offline.

Tests and the benchmark point the clip backend's `model_path` at these
directories, so the real loading path runs without any download. Weights are
random: outputs have the right shapes and plumbing, not meaning.

Both families get a CLIP byte-level BPE tokenizer written from a vocabulary:
SigLIP's own tokenizer is a sentencepiece model, and neither training nor
loading one works without the sentencepiece package, which is not a
dependency. The backend treats SigLIP text the SigLIP way whatever the
tokenizer (padded to full length, no attention mask).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Union

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, SiglipConfig, SiglipModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from tiny_models import END, START, byte_level_chars

MAX_TEXT_TOKENS = 64  # what SigLIP uses; fits every default prompt even at one token per byte
TINY_IMAGE_SIZE = 32
SIGLIP_LOGIT_SCALE = 10.0  # exp of the stored parameter; SigLIP's init (0 and 0) would hide a missing bias
SIGLIP_LOGIT_BIAS = -1.5

_FAMILIES: dict[str, tuple[type, type]] = {
    "clip": (CLIPConfig, CLIPModel),
    "siglip": (SiglipConfig, SiglipModel),
}


def build_tokenizer(directory: Path, max_length: int, words: Iterable[str] = ()) -> CLIPTokenizer:
    """A CLIP tokenizer whose BPE merges make each of `words` one token; other text is one token per byte.

    With no words this is the one-token-per-byte tokenizer of tiny_models. Words
    make prompt lengths realistic (the real CLIP vocabulary holds common words
    whole), which matters when timing the text tower. The end token has the
    largest id, as the CLIP text tower's pooling expects.
    """
    directory.mkdir(parents=True, exist_ok=True)
    chars = byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    merges: dict[tuple[str, str], int] = {}  # pair -> rank
    for word in dict.fromkeys(words):
        if not re.fullmatch(r"[a-z]+", word):
            raise ValueError(f"words must be lowercase ASCII letters (their byte-level stand-ins), got {word!r}")
        # Join what the merges so far make of the word, left to right. Each new merge ranks after
        # every earlier one, so words already whole stay whole.
        while len(pieces := _bpe([*word[:-1], word[-1] + "</w>"], merges)) > 1:
            merges[(pieces[0], pieces[1])] = len(merges)
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
    vocab[START], vocab[END] = len(vocab), len(vocab) + 1
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(directory, pad_token="!", model_max_length=max_length)


def _bpe(pieces: list[str], merges: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the best-ranked adjacent pair until none has a rank."""
    while len(pieces) > 1:
        pairs = [(merges.get(pair, len(merges)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(merges):
            break
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2:]]
    return pieces


def tiny_config(family: str, vocab_size: int = 2 * 256 + 2) -> Any:
    """Two layers, width 32, 32 px images in 8 px patches: a model that runs in milliseconds."""
    config_class = _FAMILIES[family][0]
    text = {
        "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": MAX_TEXT_TOKENS,
        "pad_token_id": 0, "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1,
    }
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": TINY_IMAGE_SIZE, "patch_size": 8}
    if family == "clip":
        return config_class(text_config=text, vision_config=vision, projection_dim=24)
    text["projection_size"] = 32  # SigLIP's text head maps to the vision width
    return config_class(text_config=text, vision_config=vision)


def save_clip(directory: Union[Path, str], family: str, config: Any, seed: int = 0,
              words: Iterable[str] = ()) -> Path:
    """Save a randomly initialised `family` model of `config`, its image processor and a tokenizer.

    The image processor is the PIL one (the default one needs torchvision), set to
    the model's input size the way the real checkpoints are: CLIP resizes the
    short side and centre-crops, SigLIP resizes to the square. Returns the directory.
    """
    config_class, model_class = _FAMILIES[family]
    if not isinstance(config, config_class):
        raise TypeError(f"{family} needs a {config_class.__name__}, got {type(config).__name__}")
    directory = Path(directory)
    tokenizer = build_tokenizer(directory, config.text_config.max_position_embeddings, words)
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but text_config.vocab_size is "
                         f"{config.text_config.vocab_size}")
    end_id = tokenizer.convert_tokens_to_ids(END)
    config.text_config.eos_token_id, config.text_config.bos_token_id = end_id, end_id - 1
    torch.manual_seed(seed)
    model = model_class(config)
    if family == "siglip":
        with torch.no_grad():
            model.logit_scale.fill_(math.log(SIGLIP_LOGIT_SCALE))
            model.logit_bias.fill_(SIGLIP_LOGIT_BIAS)
    model.save_pretrained(directory)
    side = config.vision_config.image_size
    if family == "clip":
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    else:
        image_processor = SiglipImageProcessorPil(size={"height": side, "width": side})
    image_processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_clip(directory: Union[Path, str], family: str = "clip") -> Path:
    """A tiny random `family` ("clip" or "siglip") model directory for `model_path`."""
    return save_clip(directory, family, tiny_config(family))
