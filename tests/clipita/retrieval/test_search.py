"""``clipita search``'s queries: resolving a category, the query text, hierarchical relevance, and the command's
output on the tiny index (``clipita.retrieval.search``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_retrieval import build_tiny_index, tiny_base_dir

from clipita.cli import main as clipita
from clipita.retrieval.search import is_relevant, query_text, resolve_category


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory) -> Path:
    return build_tiny_index(tiny_base_dir(tmp_path_factory))


def test_query_text_and_category_resolution():
    tree = [("Footwear",), ("Footwear", "Shoes"), ("Footwear", "Shoes", "Sports Shoes"), ("Apparel", "Shoes")]
    assert query_text("Footwear > Shoes > Sports Shoes") == "Sports Shoes"
    assert query_text("Footwear>Shoes", "path") == "Footwear > Shoes"
    assert resolve_category("footwear >shoes", tree) == ("Footwear", "Shoes")
    assert resolve_category("Sports Shoes", tree) == ("Footwear", "Shoes", "Sports Shoes")
    assert resolve_category("Shoes", tree) is None  # two nodes are called Shoes
    assert resolve_category("moon boots", tree) is None
    assert is_relevant(("Footwear", "Shoes", "Sports Shoes"), ("Footwear",))
    assert not is_relevant(("Footwear",), ("Footwear", "Shoes"))


@pytest.mark.slow
def test_search_json_is_sorted_and_free_text_works(tiny_index, capsys):
    queries = ["Footwear > Shoes > Sports Shoes", "a glittery moon boot for cats"]
    clipita(["search", "--index", str(tiny_index), *queries, "-k", "5", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert payload["backend"] == "exact" and payload["k"] == 5
    known, free = payload["queries"]
    assert known["category"] == "Footwear > Shoes > Sports Shoes" and known["query_text"] == "Sports Shoes"
    assert free["category"] is None and free["query_text"] == queries[1]
    for result in payload["queries"]:
        scores = [hit["score"] for hit in result["results"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert [hit["rank"] for hit in result["results"]] == [1, 2, 3, 4, 5]
        assert all(hit["id"] and hit["title"] and hit["category"] for hit in result["results"])
        assert all(" > ".join(hit["category_path"]) == hit["category"] for hit in result["results"])

    clipita(["search", "--index", str(tiny_index), "Footwear", "-k", "3"])
    out = capsys.readouterr().out
    assert "rank" in out and "score" in out and len([line for line in out.splitlines() if line.strip()]) == 5
