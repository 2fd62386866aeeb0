"""The leakage guard sees a category name the way the lexical signal's tokenizer does (plural stems, hyphenated,
written apart or joined) and at every level of the path, not only the leaf."""

from __future__ import annotations

import pytest

from datamodules.leakage import describe_leakage, leakage_report, names_label, tokens

TSHIRTS = ("Apparel", "Topwear", "T-Shirts")


def names(text: str, label: str) -> bool:
    return names_label(tokens(text), tokens(label))


@pytest.mark.parametrize(
    "title", ["Men's Tshirt", "Puma T-Shirt", "Grey t shirt, 2 pack", "TSHIRTS", "t-shirts"]
)
def test_hyphenated_joined_and_apart_forms_name_the_same_category(title):
    assert names(title, "T-Shirts") and names(title, "Tshirts") and names(title, "T Shirts")


@pytest.mark.parametrize(
    ("title", "label"),
    [
        ("Titan silver watch", "Watches"),
        ("Lavie red handbag", "Handbags"),
        ("Kurta with dupatta", "Kurtas"),
        ("Leather bags & wallets", "Bags and Wallets"),  # stopwords and punctuation between words are ignored
        ("Sports shoes", "Sports-Shoes"),
    ],
)
def test_plural_stems_and_stopwords_follow_the_lexical_tokenizer(title, label):
    assert names(title, label)


@pytest.mark.parametrize(
    ("title", "label"),
    [
        ("Lavie red handbag", "Bags"),  # part of a word is not the word
        ("Smith Granny 011", "Granny-Smith"),  # out of order
        ("shirt", "T-Shirts"),  # a part of the name alone
        ("anything", "The"),  # a name of stopwords names nothing
    ],
)
def test_what_does_not_name_a_category(title, label):
    assert not names(title, label)


def test_a_title_naming_the_leaf_in_another_form_counts_as_leaking():
    products = [(TSHIRTS, {"title": "Men's Tshirt"}), (TSHIRTS, {"title": "Roadster t shirt"})]
    products += [(("Footwear", "Shoes"), {"title": "Nike Air"})]
    report = leakage_report(products)
    assert report["fields"]["title"]["share"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["leaves_flagged"] == 1 and report["leaves_flagged_examples"] == [
        "Apparel > Topwear > T-Shirts"
    ]


def test_every_level_of_the_path_is_measured():
    products = [
        (TSHIRTS, {"title": "Apparel basics crew neck"}),  # names level 1 only
        (TSHIRTS, {"title": "Topwear essentials", "attributes": "Apparel"}),  # levels 1 and 2
        (TSHIRTS, {"title": "plain", "id": "apparel_001"}),  # ids are measured, not counted as text
        (("Footwear", "Shoes"), {"title": "Casual shoes"}),  # its leaf is level 2
    ]
    report = leakage_report(products)
    levels = {x["level"]: x for x in report["levels"]}
    assert sorted(levels) == [1, 2, 3]
    assert levels[1]["products"] == 4 and levels[1]["share"] == pytest.approx(2 / 4)
    assert levels[1]["fields"]["title"] == pytest.approx(1 / 4) and levels[1]["fields"]["attributes"] == 0.25
    assert levels[1]["fields"]["id"] == pytest.approx(1 / 4)
    assert levels[2]["products"] == 4 and levels[2]["share"] == pytest.approx(2 / 4)  # Topwear and Shoes
    assert levels[3]["products"] == 3 and levels[3]["share"] == 0.0
    assert report["share"] == pytest.approx(1 / 4)  # the leaf figure: only the shoes name their own leaf
    assert "level 1 50%, level 2 50%, level 3 0%" in describe_leakage(report)


def test_a_catalogue_of_one_level_reports_one_level_and_no_level_sentence():
    report = leakage_report([(("Shirts",), {"title": "blue shirt"}), (("Bags",), {"title": "tote"})])
    assert [x["level"] for x in report["levels"]] == [1] and report["levels"][0]["share"] == 0.5
    assert "level" not in describe_leakage(report)
    assert leakage_report([])["levels"] == [] and leakage_report([])["share"] == 0.0
