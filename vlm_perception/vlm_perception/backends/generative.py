"""Generative VLMs (SmolVLM, Qwen2.5-VL, LLaVA, ...) through transformers: yes/no presence and free answers.

Any `AutoModelForImageTextToText` model whose processor has a chat template
works without per-family code: prompts are the model's own chat template with
one image followed by the text.

Presence. For each phrase the model is asked `presence_prompt` (default
"Is there any {} in the image? Answer yes or no."), and its next-token
distribution after the assistant prompt is read once, without sampling:

    score = P(yes) / (P(yes) + P(no))

where P(yes) sums the probabilities of every single vocabulary token spelling
"Yes" or "yes", with or without a leading space (likewise for no); the token ids
are found once at load. The score is the model's preference for yes over no,
so 0.5 means undecided and `default_threshold` is 0.5. There are no boxes
(`localizes = False`). The query parser drops articles, so the default prompt
says "any {}": it reads right for singular ("any red cup"), plural ("any
apples") and mass nouns without guessing between a and an. `{}` is replaced by
the phrase as given.

Caching. Every prompt on a frame starts with the same head: the chat template up
to and including the image placeholder token. The rest (the question and the
assistant prompt) is the tail. So:

- per frame (FrameCache): the processor's output for the head (the
  preprocessed image, the head's tokens with the image placeholder expanded)
  and the key/value cache of one forward pass over it, so the vision tower and
  the head run once per frame, not per phrase or per call;
- per phrase (PhraseCache): the tail's token ids;
- per call: one forward pass over the tails of all phrases, each continuing a
  copy of the head's KV cache. Tails are right-padded, so every real token keeps
  the position it has in the full prompt (left padding would shift them after
  the shared head).

This is the prefix-caching path that generate() supports for every model, and
it gives the same logits as a forward pass over the whole prompt because:

- the head ends at the image placeholder, a special token tokenizers split on,
  so head tokens + tail tokens are the full prompt's tokens (checked at load
  and for every tail);
- some families keep position state on the model after a prefill (Qwen2-VL's
  rope deltas), so a frame's KV cache is reused only while its head was the
  model's latest prefill; otherwise the head is run again.

Images are converted to PIL for the processor: without torchvision,
transformers 5 picks the PIL ("slow") image processors, which run on CPU
offline. Not thread-safe: the model, its caches and the prefill counter are
shared mutable state; the engine serialises calls.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from ..core.errors import BackendError, BackendLoadError
from .base import Detection
from .caching import FrameCache, PhraseCache
from .common import (
    YES_NO_PROMPT, asked_phrases, check_image, first_line, inference, load_pretrained, option, pretrained_options,
    reject_unknown, resolve_device,
)
from .precision import check_precision, resolve_precision, torch_dtype

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
DEFAULT_PRESENCE_PROMPT = YES_NO_PROMPT
# Out of memory and the like (RuntimeError); processors reject odd inputs with ValueError.
INFERENCE_ERRORS = (RuntimeError, ValueError)
PHRASE_CACHE_SIZE = 1024
YES_WORDS, NO_WORDS = ("Yes", "yes"), ("No", "no")
# Stands in for the question while the chat template is split into head and tail;
# a private-use character, so no template or question contains it.
_QUESTION_SLOT = "\ue000"


@dataclass
class _Frame:
    inputs: dict[str, torch.Tensor]  # processor output for the prompt head, on the model's device
    cache: Any = None  # KV cache of the head, valid while `prefill` is the backend's latest prefill
    prefill: int = -1


class GenerativeBackend:
    """Yes/no presence per phrase and free-form answers from one image-text-to-text model.

    `model` is a hub id (default HuggingFaceTB/SmolVLM-256M-Instruct), `model_path` a
    local save_pretrained directory. Not thread-safe (see the module docstring).
    """

    localizes = False
    default_threshold = 0.5  # yes more likely than no

    def __init__(
        self,
        *,
        model: str = "",
        model_path: str = "",
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "torch",
        presence_prompt: str = DEFAULT_PRESENCE_PROMPT,
        max_new_tokens: int = 64,
        **unknown: Any,
    ) -> None:
        reject_unknown("generative", unknown,
                       "model, model_path, device, precision, runtime, presence_prompt, max_new_tokens")
        if runtime != "torch":
            raise BackendLoadError(f"runtime '{runtime}' does not apply to the generative backend, which runs in "
                                   "PyTorch only; use runtime torch (openvino serves the owl and clip backends)")
        self.presence_prompt: str = option(
            "presence_prompt", presence_prompt, str, _is_prompt_template,
            'text with exactly one "{}" where the phrase goes, e.g. "' + DEFAULT_PRESENCE_PROMPT + '"',
        )
        self.max_new_tokens: int = option("max_new_tokens", max_new_tokens, int, lambda v: v >= 1, "at least 1")
        self.device = resolve_device(device)
        # The whole model, language model included: that is where a generative VLM spends its time.
        self.precision = resolve_precision(check_precision(precision), self.device)
        self.runtime = runtime
        source = model_path or model or DEFAULT_MODEL
        self.model, self.processor = self._load(model or DEFAULT_MODEL, model_path)
        if not (hasattr(self.processor, "tokenizer") and hasattr(self.processor, "image_processor")):
            raise BackendLoadError(
                f"'{source}' has no image-and-text processor (AutoProcessor gave a {type(self.processor).__name__}); "
                "save the model's processor with it (processor_config.json, tokenizer and image processor files)"
            )
        self.tokenizer = self.processor.tokenizer
        self._image_token = self._checked_image_token(source)
        self._add_special_tokens, self._head_text, self._head_ids = self._split_prompt(source)
        self.yes_ids = answer_token_ids(self.tokenizer, YES_WORDS)
        self.no_ids = answer_token_ids(self.tokenizer, NO_WORDS)
        for words, ids in ((YES_WORDS, self.yes_ids), (NO_WORDS, self.no_ids)):
            if not ids:
                raise BackendLoadError(
                    f"the tokenizer of '{source}' has no single token spelling {' or '.join(words)} "
                    "(with or without a leading space), so presence cannot be scored as yes versus no; "
                    "choose a model whose vocabulary has them"
                )
        pad_ids = (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0)
        self._pad_id = next(i for i in pad_ids if i is not None)  # fills right padding, which nothing attends to
        forward_parameters = inspect.signature(self.model.forward).parameters
        self._keeps_logits = "logits_to_keep" in forward_parameters
        # transformers renamed past_key_values to cache during 5.x (forward, generate and outputs).
        self._cache_name = "cache" if "cache" in forward_parameters else "past_key_values"
        self._prefills = 0
        self._tails: PhraseCache[list[int]] = PhraseCache(PHRASE_CACHE_SIZE)
        self._frames: FrameCache[_Frame] = FrameCache()

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        """One box-less Detection per distinct label, in order, scored P(yes) / (P(yes) + P(no)).

        Pass the same read-only array again to reuse the frame's preprocessing and head.
        """
        phrases = asked_phrases(image, labels)
        if not phrases:
            return []
        with inference("generative", image, INFERENCE_ERRORS):
            tails = self._tails.get_many(phrases, self._presence_tails)
            frame = self._frames.get_or_compute(image, self._encode_frame)
            scores = self._score(frame, tails)
        return [Detection(phrase, float(score), None) for phrase, score in zip(phrases, scores)]

    def answer(self, image: np.ndarray, question: str) -> str:
        """The model's greedy answer to `question` about the image, at most max_new_tokens tokens."""
        check_image(image)
        with inference("generative", image, INFERENCE_ERRORS):
            tail = self._tail_ids(question)
            frame = self._frames.get_or_compute(image, self._encode_frame)
            head_ids = frame.inputs["input_ids"]
            input_ids = torch.cat([head_ids, torch.tensor([tail], device=self.device)], dim=1)
            # The head's KV cache stands for the head tokens, so generate() runs only the tail.
            output = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1, pad_token_id=self._pad_id,
                **{self._cache_name: self._head_cache(frame, copies=1)},
            )
        return self.tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True).strip()

    def clear_caches(self) -> None:
        """Forget the cached frame and phrase prompts."""
        self._frames.clear()
        self._tails.clear()

    # loading

    def _load(self, model: str, model_path: str) -> tuple[torch.nn.Module, Any]:
        def load(source: str, local_only: bool) -> tuple[torch.nn.Module, Any]:
            config = AutoConfig.from_pretrained(source, **pretrained_options(local_only))
            if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
                raise BackendLoadError(
                    f"'{source}' holds a '{config.model_type}' model, which is not an image-text-to-text model; "
                    f"point model or model_path at a generative VLM such as {DEFAULT_MODEL}, "
                    "or use the backend made for this model"
                )
            loaded = AutoModelForImageTextToText.from_pretrained(
                source, config=config, **pretrained_options(local_only), dtype=torch_dtype(self.precision)
            )
            try:
                processor = AutoProcessor.from_pretrained(source, **pretrained_options(local_only))
            except ImportError as exc:  # e.g. a video processor that needs torchvision
                raise BackendLoadError(
                    f"the processor of '{source}' needs a package that is not installed ({first_line(exc)}); "
                    "install it, e.g. pip install torchvision"
                ) from exc
            return loaded.to(self.device).eval(), processor

        return load_pretrained("generative", model, model_path, load)

    def _checked_image_token(self, source: str) -> str:
        """The processor's image placeholder, after checking that prompts can be built at all."""
        if not getattr(self.processor, "chat_template", None):
            raise BackendLoadError(
                f"the processor of '{source}' has no chat template, so prompts cannot be built for it; "
                "use an instruction-tuned model that ships one, or add chat_template.jinja to the model directory"
            )
        image_token = getattr(self.processor, "image_token", None)
        if not isinstance(image_token, str) or not image_token:
            raise BackendLoadError(
                f"the processor of '{source}' ({type(self.processor).__name__}) names no image placeholder token; "
                "this backend needs a processor that marks the image in the prompt (e.g. SmolVLM, LLaVA, Qwen2.5-VL)"
            )
        return image_token

    def _split_prompt(self, source: str) -> tuple[bool, str, list[int]]:
        """(add_special_tokens, head text, head token ids) of the chat template.

        add_special_tokens follows processor.apply_chat_template: off when the
        template already starts with the BOS token.
        """
        rendered = self._render(_QUESTION_SLOT)
        before, marker, _ = rendered.partition(_QUESTION_SLOT)
        if not marker or before.count(self._image_token) != 1:
            raise BackendLoadError(
                f"the chat template of '{source}' does not put one image placeholder {self._image_token!r} "
                "before the question text; use the template the model was trained with"
            )
        head = before[: before.index(self._image_token) + len(self._image_token)]
        bos = self.tokenizer.bos_token
        add_special_tokens = not (bos is not None and rendered.startswith(bos))
        head_ids = self.tokenizer(head, add_special_tokens=add_special_tokens)["input_ids"]
        if not head_ids or head_ids[-1] != self.tokenizer.convert_tokens_to_ids(self._image_token):
            raise BackendLoadError(
                f"the tokenizer of '{source}' does not keep the image placeholder {self._image_token!r} as one "
                "token at the end of the prompt head; the processor and tokenizer files do not belong together"
            )
        return add_special_tokens, head, head_ids

    # prompts

    def _render(self, question: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def _tail_ids(self, question: str) -> list[int]:
        """Tokens of the full prompt for `question` after the head's."""
        ids = self.tokenizer(self._render(question), add_special_tokens=self._add_special_tokens)["input_ids"]
        if ids[: len(self._head_ids)] != self._head_ids:
            raise BackendError(
                f"the prompt for {question!r} does not start with the prompt head's tokens; "
                "the chat template changes what comes before the image depending on the question"
            )
        return ids[len(self._head_ids):]

    def _presence_tails(self, phrases: list[str]) -> list[list[int]]:
        return [self._tail_ids(self.presence_prompt.replace("{}", phrase)) for phrase in phrases]

    # inference

    def _encode_frame(self, image: np.ndarray) -> _Frame:
        inputs = self.processor(
            images=[Image.fromarray(image)], text=[self._head_text], add_special_tokens=self._add_special_tokens,
            return_tensors="pt",
        )
        return _Frame(dict(inputs.to(self.device, dtype=torch_dtype(self.precision))))

    def _head_cache(self, frame: _Frame, copies: int) -> Any:
        """A copy of the frame's head KV cache for `copies` sequences; runs the head when it is stale."""
        if frame.cache is None or frame.prefill != self._prefills:
            keep = {"logits_to_keep": 1} if self._keeps_logits else {}
            output = self.model(**frame.inputs, use_cache=True, **keep)
            frame.cache = getattr(output, self._cache_name)
            self._prefills += 1
            frame.prefill = self._prefills
        cache = copy.deepcopy(frame.cache)  # forward passes extend the cache they are given
        if copies > 1:
            cache.batch_repeat_interleave(copies)
        return cache

    def _score(self, frame: _Frame, tails: list[list[int]]) -> torch.Tensor:
        """P(yes) / (P(yes) + P(no)) after each tail, from one forward pass continuing the head."""
        count = len(tails)
        lengths = torch.tensor([len(tail) for tail in tails], device=self.device)
        width, shortest = int(lengths.max()), int(lengths.min())
        input_ids = torch.full((count, width), self._pad_id, dtype=torch.long, device=self.device)
        for row, tail in enumerate(tails):
            input_ids[row, : len(tail)] = torch.tensor(tail, device=self.device)
        cache = self._head_cache(frame, copies=count)
        # Every row's last real token lies in the final `keep` positions.
        keep = width - shortest + 1
        keep_kwargs = {"logits_to_keep": keep} if self._keeps_logits else {}
        # No attention mask: with right padding no real token attends to the padding after it,
        # and without one every family numbers the tail's positions on from the cache (with one,
        # Qwen2.5-VL in transformers 5.24 derives positions for head and tail together and fails).
        logits = self.model(
            input_ids=input_ids, use_cache=True, **{self._cache_name: cache}, **keep_kwargs
        ).logits[:, -keep:]
        last = logits[torch.arange(count, device=self.device), lengths - shortest].float()
        # P(yes) / (P(yes) + P(no)) = sigmoid(log P(yes) - log P(no)); the softmax normaliser cancels.
        log_yes = torch.logsumexp(last[:, self.yes_ids], dim=-1)
        log_no = torch.logsumexp(last[:, self.no_ids], dim=-1)
        return torch.sigmoid(log_yes - log_no).cpu()

def _is_prompt_template(text: str) -> bool:
    return text.count("{}") == 1 and "{" not in text.replace("{}", "") and "}" not in text.replace("{}", "")


def answer_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Ids of the non-special tokens that decode to one of `words`, with or without a leading space."""
    spellings = {spelling for word in words for spelling in (word, " " + word)}
    endings = {word.lower() for word in words}
    special = set(tokenizer.all_special_ids)
    ids = []
    for token, token_id in tokenizer.get_vocab().items():
        # Cheap filter first: vocabularies have up to a few hundred thousand tokens.
        if token_id in special or not any(token.lower().endswith(e) for e in endings):
            continue
        if tokenizer.decode([token_id], clean_up_tokenization_spaces=False) in spellings:
            ids.append(token_id)
    return sorted(ids)
