"""Randomly initialised generative VLMs saved like real ones, built fully offline.

LLaVA is the family whose processor is simplest to build offline: a CLIP PIL
image processor, a byte-level BPE tokenizer written from a vocabulary here, and
a chat template. The vision tower is a 2-layer CLIP on 32 px images in 8 px
patches (16 image tokens), the language model a 2-layer Llama. Idefics3 is the
family of the backend's default model (SmolVLM): its processor splits an image
into tiles and writes rows of placeholders with text between them. Weights are
random: outputs have the right shapes and plumbing, not meaning.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from tiny_models import byte_level_chars

BOS, EOS, PAD, IMAGE = "<s>", "</s>", "<pad>", "<image>"
SPACE = "Ġ"  # how byte-level BPE writes a leading space
# Words merged into single tokens, each with and without a leading space.
ANSWER_WORDS = ("Yes", "yes", "No", "no")
IMAGE_SIZE, PATCH_SIZE = 32, 8

# LLaVA-1.5 style: "<s>USER: <image>\n{question}\nASSISTANT:". The BOS in the template
# makes the processor tokenize without adding special tokens, as real templates do.
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# SmolVLM's: "<|im_start|>User:<image>{question}<end_of_utterance>\nAssistant:"
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
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


def tiny_llama(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def tiny_llava_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
        ),
        text_config=tiny_llama(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )


def save_tiny_llava(directory: Path | str, words: Sequence[str] = ANSWER_WORDS,
                    chat_template: str | None = LLAVA_CHAT_TEMPLATE, seed: int = 0) -> Path:
    """Save a tiny random LLaVA with its processor to `directory`; returns the directory.

    `words` become single tokens (leave out "Yes"/"yes" to get a vocabulary without a
    one-token yes); `chat_template=None` saves a processor without a chat template.
    """
    directory = Path(directory)
    tokenizer = build_tokenizer(words)
    config = tiny_llava_config(tokenizer)
    save_model(LlavaForConditionalGeneration, config, directory, seed)
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


def save_tiny_idefics3(directory: Path | str, seed: int = 0) -> Path:
    """Save a tiny random Idefics3 (SmolVLM's family) with its processor to `directory`.

    Images are resized to at most 64 px and split into 32 px tiles plus a global view,
    each tile 4 image tokens (8 px patches, pixel shuffle by 2).
    """
    directory = Path(directory)
    tokenizer = build_tokenizer()
    rows_cols = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tokenizer.add_special_tokens({
        "bos_token": "<|im_start|>",
        "additional_special_tokens": ["<fake_token_around_image>", "<end_of_utterance>", "<global-img>", *rows_cols],
    })
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
        ),
        text_config=tiny_llama(tokenizer),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
    )
    save_model(Idefics3ForConditionalGeneration, config, directory, seed)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}, do_image_splitting=True
    )
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // 4
    Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len,
                      chat_template=IDEFICS3_CHAT_TEMPLATE).save_pretrained(directory)
    return directory


def save_model(model_class: type, config: Any, directory: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = model_class(config)
    # The default init (std 0.02) makes every next-token distribution nearly uniform, so
    # any two prompts would score alike; a wide lm_head makes scores depend on the prompt.
    torch.nn.init.normal_(model.lm_head.weight, std=2.0)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(directory)


def save_forced_llava(directory: Path | str, answer: str) -> Path:
    """A tiny LLaVA (saved like save_tiny_llava) whose every next token is `answer` (one of ANSWER_WORDS).

    Forced in its weights, so it survives saving and works in any process that loads it (a server):
    attention and MLP outputs are zero, so the last hidden state is the last token's embedding, every
    embedding is the same unit vector, and only `answer`'s row of the output head reads it.
    """
    directory = save_tiny_llava(directory)
    model = LlavaForConditionalGeneration.from_pretrained(directory)
    answer_id = PreTrainedTokenizerFast.from_pretrained(directory).convert_tokens_to_ids(answer)
    language_model = model.model.language_model
    with torch.no_grad():
        for layer in language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        language_model.embed_tokens.weight.zero_()
        language_model.embed_tokens.weight[:, 0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[answer_id, 0] = 10.0  # logit 10 * sqrt(hidden_size) against 0 for the rest
    model.save_pretrained(directory)
    return directory
