"""Natural-language queries -> the object phrases a backend scores.

"is there a red apple or a banana in the bin?" -> ["red apple", "banana"].
The parser is deliberately plain: it strips the question frame, splits lists
on commas and conjunctions, and drops leading articles. Plurals stay as the
user wrote them ("apples"): open-vocabulary models handle them, and rewriting
them would change what was asked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import QueryError

MAX_QUERY_CHARS = 1000

# Question openings, longest first so "is there any" wins over "is there".
_QUESTION_PREFIXES = (
    r"can you (?:see|find|spot|detect|locate)",
    r"do you see",
    r"where (?:is|are)",
    r"(?:is|are) there(?: any)?",
    r"(?:find|locate|detect|pick(?: up)?|grasp|grab|show me|look for|count)",
    r"how many",
)
_QUESTION = re.compile(r"^(?:please\s+)?(?:%s)\b\s*" % "|".join(_QUESTION_PREFIXES))
# Where-clauses describe the scene, not the object: "... in the bin", "... on the table". Stripped
# from each listed item, so "a cup in the bin or a plate" keeps the plate.
_LOCATION = re.compile(
    r"\s+(?:in|on|inside|at|near|under|within) (?:the|this|that|my|a|an) [\w\s-]+$"
)
_SEPARATORS = re.compile(r"\s*(?:,|;|/|\band\b|\bor\b|&|\+)\s*")
_ARTICLES = re.compile(r"^(?:(?:a|an|the|some|any|one|that|this)(?:\s+|$))+")
_TRAILING_WORDS = re.compile(
    r"(?:\s+(?:are|is) there|\s+(?:are|is)|\s+(?:please|here|there|visible|present|now|in view))+$"
)
# Open questions name no object; only backends with free-form answers take them.
_OPEN_QUESTION = re.compile(r"^(?:what|which|who|why|describe|tell me|how(?! many))\b")
_PUNCTUATION = re.compile(r"[?!.:\"]+")


def validate_query(text: str) -> str:
    """The query stripped of surrounding whitespace, or QueryError saying what to fix."""
    stripped = text.strip()
    if not stripped:
        raise QueryError('empty query; ask for an object, e.g. "is there an apple?"')
    if len(stripped) > MAX_QUERY_CHARS:
        raise QueryError(
            f"query is {len(stripped)} characters, over the limit of {MAX_QUERY_CHARS}; "
            "ask for fewer objects per call"
        )
    return stripped


@dataclass(frozen=True)
class ParsedQuery:
    text: str  # the query as asked, stripped
    phrases: list[str]  # object phrases, in order, without duplicates
    open_question: bool  # "what is in the bin?": needs a backend that answers in words


def parse_query(text: str) -> ParsedQuery:
    """Split a query into object phrases, or mark it as an open question."""
    stripped = validate_query(text)
    query = " ".join(_PUNCTUATION.sub(" ", stripped.lower()).split())
    if _OPEN_QUESTION.match(query):
        return ParsedQuery(stripped, [], open_question=True)
    query = _QUESTION.sub("", query)
    phrases: list[str] = []
    for part in _SEPARATORS.split(query):
        phrase = _TRAILING_WORDS.sub("", _ARTICLES.sub("", _LOCATION.sub("", part.strip())))
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise QueryError(
            f'no object phrase found in "{stripped}"; name the objects, '
            'e.g. "apple, banana" or "is there a red cup?"'
        )
    return ParsedQuery(stripped, phrases, open_question=False)


def normalize_phrases(phrases: list[str]) -> list[str]:
    """Standing-query phrases as configured: trimmed, non-empty, without duplicates."""
    result: list[str] = []
    for phrase in phrases:
        cleaned = " ".join(phrase.split())
        if cleaned and cleaned not in result:
            result.append(cleaned)
    return result
