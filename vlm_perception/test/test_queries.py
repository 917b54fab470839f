import pytest

from vlm_perception.core.errors import QueryError
from vlm_perception.core.queries import MAX_QUERY_CHARS, normalize_phrases, parse_query


@pytest.mark.parametrize("query, phrases", [
    ("is there an apple in the bin?", ["apple"]),
    ("Is there a red apple or a banana in the bin?", ["red apple", "banana"]),
    ("apple, banana", ["apple", "banana"]),
    ("apple, banana and a cup", ["apple", "banana", "cup"]),
    ("are there any apples and oranges on the table?", ["apples", "oranges"]),
    ("pick the banana", ["banana"]),
    ("pick up the screwdriver please", ["screwdriver"]),
    ("Can you see a cup of coffee?", ["cup of coffee"]),
    ("how many bolts are there?", ["bolts"]),
    ("find the red cup; the blue cup", ["red cup", "blue cup"]),
    ("cups", ["cups"]),  # plurals stay as written
    ("apple, Apple, the apple", ["apple"]),  # duplicates collapse
    ("  banana  ", ["banana"]),
    # A where-clause ends its own item only: the objects named after it are kept.
    ("is there a cup in the bin or a plate on the table?", ["cup", "plate"]),
    ("is there a cup on the table and a banana?", ["cup", "banana"]),
])
def test_object_phrases(query, phrases):
    parsed = parse_query(query)
    assert parsed.phrases == phrases
    assert not parsed.open_question


@pytest.mark.parametrize("query", ["what is in the bin?", "Describe the scene", "which tool is closest?"])
def test_open_questions_have_no_phrases(query):
    parsed = parse_query(query)
    assert parsed.open_question and parsed.phrases == [] and parsed.text == query.strip()


@pytest.mark.parametrize("query, message", [
    ("", "empty query"),
    ("  \t\n", "empty query"),
    ("?!", "no object phrase"),
    ("the, a, an", "no object phrase"),
    ("x" * (MAX_QUERY_CHARS + 1), "over the limit of 1000"),
])
def test_bad_queries_say_what_to_fix(query, message):
    with pytest.raises(QueryError, match=message):
        parse_query(query)


def test_longest_allowed_query_is_accepted():
    assert parse_query("a" * MAX_QUERY_CHARS).phrases == ["a" * MAX_QUERY_CHARS]
    # The limit is on what is asked: surrounding whitespace does not count.
    assert parse_query("  cup" + " " * MAX_QUERY_CHARS).phrases == ["cup"]


def test_standing_phrases_are_trimmed_and_deduplicated():
    assert normalize_phrases(["  red  apple ", "", "banana", "red apple"]) == ["red apple", "banana"]
