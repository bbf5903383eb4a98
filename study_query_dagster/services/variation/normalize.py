"""What `exact` equivalence compares: an answer reduced to its words.

Lowercase (Unicode casefold), punctuation and symbols removed, the English articles "a", "an"
and "the" dropped, whitespace collapsed: "The capital is Canberra." and "capital is canberra"
are one answer; "Canberra" and "Sydney" are two.
"""

from __future__ import annotations

import unicodedata

ARTICLES = frozenset({"a", "an", "the"})


def _strip_punctuation(text: str) -> str:
    # P* (punctuation) and S* (symbols) become spaces, so "yes/no" is two words, not "yesno".
    return "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)


def normalize_answer(text: str) -> str:
    """The normalised form `exact` compares (see the module docstring)."""
    folded = _strip_punctuation(unicodedata.normalize("NFKC", text).casefold())
    return " ".join(word for word in folded.split() if word not in ARTICLES)
