"""A randomly initialised LLaVA model saved like a real generative VLM, built fully offline.

LLaVA is the family whose processor is simplest to build offline: a CLIP PIL
image processor, a byte-level BPE tokenizer written from a vocabulary here, and
a chat template. The vision tower is a 2-layer CLIP on 32 px images in 8 px
patches (16 image tokens), the language model a 2-layer Llama. Weights are
random: outputs have the right shapes and plumbing, not meaning.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from tiny_models import byte_level_chars

BOS, EOS, PAD, IMAGE = "<s>", "</s>", "<pad>", "<image>"
SPACE = "Ġ"  # how byte-level BPE writes a leading space
# Words merged into single tokens, each with and without a leading space.
ANSWER_WORDS = ("Yes", "yes", "No", "no")
IMAGE_SIZE, PATCH_SIZE = 32, 8

# LLaVA-1.5 style: "<s>USER: <image>\n{question}\nASSISTANT:". The BOS in the template
# makes the processor tokenize without adding special tokens, as real templates do.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer(words: Sequence[str] = ANSWER_WORDS) -> PreTrainedTokenizerFast:
    """Byte-level BPE: one token per byte, plus `words` (and " "+word) as single tokens via merges."""
    chars = byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    merges: list[tuple[str, str]] = []

    def merge(left: str, right: str) -> None:
        if left + right not in vocab:
            merges.append((left, right))
            vocab[left + right] = len(vocab)

    for word in words:
        for i in range(1, len(word)):
            merge(word[:i], word[i])
    for word in words:  # ranked after the words, so " yes" becomes "Ġ" + "yes" -> "Ġyes"
        merge(SPACE, word)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tokenizer


def tiny_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    vocab_size = len(tokenizer)
    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )


def save_tiny_llava(directory: Path | str, words: Sequence[str] = ANSWER_WORDS,
                    chat_template: str | None = CHAT_TEMPLATE, seed: int = 0) -> Path:
    """Save a tiny random LLaVA with its processor to `directory`; returns the directory.

    `words` become single tokens (leave out "Yes"/"yes" to get a vocabulary without a
    one-token yes); `chat_template=None` saves a processor without a chat template.
    """
    directory = Path(directory)
    tokenizer = build_tokenizer(words)
    config = tiny_config(tokenizer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    # The default init (std 0.02) makes every next-token distribution nearly uniform, so
    # any two prompts would score alike; a wide lm_head makes scores depend on the prompt.
    torch.nn.init.normal_(model.lm_head.weight, std=2.0)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    # The PIL image processor: the default one needs torchvision, which is not installed.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=chat_template,
    )
    processor.save_pretrained(directory)
    return directory


def copy_with(source: Path, destination: Path, replace: dict[str, Path]) -> Path:
    """A copy of model directory `source` with some files taken from other directories."""
    shutil.copytree(source, destination)
    for name, origin in replace.items():
        shutil.copy(origin / name, destination / name)
    return destination
