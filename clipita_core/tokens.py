"""The lexical tokenizer: the words of a text exactly as the BM25 signal sees them, and their hashed token ids.

Tokenizer (deterministic, offline, no stemmer library): NFKC + lowercase; words are maximal runs of letters and
digits; a hyphenated compound also yields its joined form (``t-shirt`` -> ``t``, ``shirt``, ``tshirt``, so the
category "Tshirts" meets the title "Puma Men T-shirt"); words shorter than 2 characters and a short English
stopword list are dropped; then a light plural stemmer (:func:`plural_stem`). PyStemmer is not used: it is not
installed here, and a stemmer whose output may change with a library version would silently invalidate stored
token ids. :data:`TOKENIZER_ID` names this tokenizer; stores key on it.

Tokens are hashed into ``num_buckets`` buckets (a stable hash, blake2b, not Python's per-process ``hash``), so
token ids need no vocabulary file, a store written by one process is read by another, and the statistics are a
fixed-size array. With ``2**18`` buckets and a catalogue vocabulary of a few thousand words, collisions are rare;
a collision only merges the statistics of two words.

The BM25 signal (``lightning_modules.lexical``), its token store (``datamodules``), the BM25 baseline's stemmer and
the leakage guard all read text through this one module.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

NUM_BUCKETS = 2**18
TOKENIZER_ID = "lex-v1:nfkc-lower-alnum-compound-min2-stop-plural:blake2b8"

STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split()
)
_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")
_PART = re.compile(r"[^\W_]+")


def plural_stem(word: str) -> str:
    """Strip an English plural ending: ``-ies`` -> ``-y``; ``-ches/-shes/-sses/-xes`` drop ``es``; a final ``-s``
    unless after ``s``, ``u`` or ``i``. Symmetric on queries and documents, so both meet on the same stem.

    >>> [plural_stem(w) for w in ["shoes", "watches", "dresses", "accessories", "jeans", "bus"]]
    ['shoe', 'watch', 'dress', 'accessory', 'jean', 'bus']
    """
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _normalise(text: str | None) -> str:
    return unicodedata.normalize("NFKC", text or "").lower()


def word_parts(text: str | None) -> list[str]:
    """Every run of letters and digits of the normalised text, in order, none dropped, stemmed or joined: the
    pieces :func:`words` is built from (the leakage guard joins neighbours itself).

    >>> word_parts("Men's T-Shirts")
    ['men', 's', 't', 'shirts']
    """
    return _PART.findall(_normalise(text))


def words(text: str) -> list[str]:
    """The normalised words of one text (before hashing).

    >>> words("Puma Men's Grey T-Shirts, 2 pack")
    ['puma', 'men', 'grey', 'shirt', 'tshirt', 'pack']
    """
    out: list[str] = []
    for match in _WORD.findall(_normalise(text)):
        parts = _PART.findall(match)
        candidates = parts + (["".join(parts)] if len(parts) > 1 else [])
        out.extend(plural_stem(w) for w in candidates if len(w) >= 2 and w not in STOPWORDS)
    return out


def bucket(word: str, num_buckets: int = NUM_BUCKETS) -> int:
    """A process-independent hash of a word into ``[0, num_buckets)``."""
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_buckets


def lexical_tokens(texts: Sequence[str], num_buckets: int = NUM_BUCKETS) -> list[np.ndarray]:
    """One ``int64`` array of hashed token ids per text (duplicates kept: they are the term frequencies)."""
    cache: dict[str, int] = {}
    out = []
    for text in texts:
        ids = [cache[w] if w in cache else cache.setdefault(w, bucket(w, num_buckets)) for w in words(text)]
        out.append(np.asarray(ids, dtype=np.int64))
    return out
