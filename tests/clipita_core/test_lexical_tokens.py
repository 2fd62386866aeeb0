"""The lexical tokenizer: its words, its plural stemmer, and token ids that never change silently."""

from __future__ import annotations

import pytest

from clipita_core.tokens import NUM_BUCKETS, TOKENIZER_ID, bucket, lexical_tokens, plural_stem, words


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("shoes", "shoe"),
        ("watches", "watch"),
        ("dresses", "dress"),
        ("boxes", "box"),
        ("accessories", "accessory"),
        ("jeans", "jean"),
        ("bus", "bus"),
        ("glass", "glass"),
        ("tennis", "tennis"),
        ("ties", "tie"),  # too short for -ies -> -y: the plain -s rule
        ("tshirt", "tshirt"),
    ],
)
def test_plural_stem(word, stem):
    assert plural_stem(word) == stem


def test_words_join_hyphenated_compounds_and_drop_stopwords_and_short_words():
    assert words("Puma Men's Grey T-Shirts, 2 pack") == ["puma", "men", "grey", "shirt", "tshirt", "pack"]
    assert words("The Tshirts of the Week") == ["tshirt", "week"]
    assert words("") == [] and words(None) == []
    assert words("ＴＳＨＩＲＴＳ") == ["tshirt"]  # NFKC folds full-width letters


def test_token_ids_are_the_stored_ones():
    """Ids stores already hold (written under this TOKENIZER_ID): a change here must come with a new id."""
    assert (
        TOKENIZER_ID == "lex-v1:nfkc-lower-alnum-compound-min2-stop-plural:blake2b8" and NUM_BUCKETS == 2**18
    )
    rows = lexical_tokens(["Puma Men's Grey T-Shirts, 2 pack", ""])
    assert rows[0].tolist() == [239381, 12957, 63954, 24547, 161201, 132487]
    assert rows[1].tolist() == [] and rows[0].dtype.name == "int64"
    assert lexical_tokens(["tshirt"], num_buckets=1024)[0].tolist() == [bucket("tshirt", 1024)]
    assert all(0 <= bucket(w, 7) < 7 for w in words("a b c dd ee ff gg"))
