"""Which split seeds a leaderboard reports on, said in its header (issue 19.6).

Every constant chosen from measurements (grids, default weights, a shipped recipe's values, a sweep's winner) is
chosen on validation or on *design* split seeds; committed leaderboards report on *report* split seeds that no
decision used. A leaderboard YAML declares ``design_seeds`` beside ``split_seeds``; these lines state the roles, and
warn in bold when a reported seed is a design seed.
"""

from __future__ import annotations

from .spec import LeaderboardSpec


def seed_roles_lines(spec: LeaderboardSpec) -> list[str]:
    """The header lines saying which split seeds the numbers are on and what role each seed has (issue 19.6: every
    constant chosen from measurements is chosen on validation or on design seeds; reports use report seeds)."""
    roles = spec.seed_roles()
    if spec.design_seeds is None:
        return [
            "- seed roles: not declared (no `design_seeds` in the config): whether decisions were tuned on these "
            "split seeds is not stated"
        ]
    lines = []
    if roles["report"]:
        lines.append(
            f"- reported on **report seeds {roles['report']}**: split seeds no decision used (no grid, default, "
            "recipe value or sweep winner was chosen on them)"
        )
    lines.append(
        f"- design seeds: {roles['design']} (the split seeds every decision was measured on; not reported here)"
        if not roles["tuned"]
        else f"- design seeds: {roles['design']} (the split seeds every decision was measured on)"
    )
    return lines


def tuned_seeds_warning(spec: LeaderboardSpec) -> list[str]:
    """A bold warning when reported split seeds are design seeds (numbers decisions were tuned on)."""
    tuned = spec.seed_roles()["tuned"]
    if not tuned:
        return []
    return [
        f"**Warning: split seeds {tuned} are design seeds: these numbers are design-seed numbers (decisions were "
        "tuned on them): not a held-out estimate.**",
        "",
    ]
