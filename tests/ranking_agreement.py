"""The reference ranking (a plain-Python full sort under the tie rule) and whether two top-k lists agree up to ties:
the one comparison the search == test checks use."""

from __future__ import annotations

ATOL = 1e-4  # scores closer than this count as tied (their products may swap places)


def agrees(expected: list[tuple[str, float]], got: list[tuple[str, float]], atol: float = ATOL) -> bool:
    """Two top-k lists of ``(id, score)`` agree: as long, the same scores position by position (to ``atol``),
    and the same products wherever a score is apart from its neighbours by more than ``atol``."""
    if len(expected) != len(got):
        return False
    scores = [s for _, s in expected]
    for i, ((a, s), (b, t)) in enumerate(zip(expected, got, strict=True)):
        if abs(s - t) > atol:
            return False
        tied = (i > 0 and scores[i - 1] - s <= atol) or (i + 1 < len(scores) and s - scores[i + 1] <= atol)
        if a != b and not tied:
            return False
    return True


def reference_order(scores) -> list[list[int]]:
    """Full ranking of each row of a ``[Q, N]`` score tensor by (score desc, index asc), in plain Python."""
    return [sorted(range(len(row)), key=lambda i: (-row[i], i)) for row in scores.tolist()]
