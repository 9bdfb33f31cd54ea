"""The search box's query syntax, on its own."""

from __future__ import annotations

import pytest

from workflow.core.errors import ValidationError
from workflow.core.search import Search, parse


def test_every_key_becomes_its_filter():
    search = parse("status:failure,cancelled user:ann tag:x t:y event:123,124 site:chime id:01j pipeline:alpha "
                   "after:01JDAB")
    assert search.filters() == {
        "pipeline": ["alpha"], "status": ["failure", "cancelled"], "site": ["chime"], "user": "ann",
        "tags": ["x", "y"], "event": [123, 124], "id_prefix": "01J", "precursor": "01JDAB",
    }


def test_run_selects_the_works_of_a_configuration_run_and_only_then_is_a_filter():
    assert parse("run:01jabc status:failure").filters()["parent"] == "01JABC"
    assert "parent" not in parse("status:failure").filters()  # (callers without a parent filter still fit)


def test_a_bare_word_is_a_status_an_id_prefix_or_a_pipeline():
    assert parse("failure 01JD sample-pipeline") == Search(
        status=("failure",), id_prefix="01JD", pipeline=("sample-pipeline",))
    assert parse("").filters() == Search().filters()


@pytest.mark.parametrize("text, complaint", [
    ("status:finished", "no status finished"), ("colour:red", "unknown key"), ("event:abc", "integers"),
    ("user:", "no value"), ("user:a user:b", "one user"), ("run:01A run:01B", "one run at a time"),
    ("after:A after:B", "one after:ID"),
])
def test_a_bad_term_is_refused_plainly(text, complaint):
    with pytest.raises(ValidationError, match=complaint):
        parse(text)

