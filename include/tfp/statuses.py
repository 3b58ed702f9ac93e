"""The named states the warehouse records, each once: Python compares and writes these members, and
the warehouse refuses any other value by a CHECK constraint built from the same enum (migration 0003).

They are ``StrEnum``: a member is its string, so the SQL under ``include/sql`` (``l.status = 'staged'``)
and the stored rows read the same as before.
"""

from __future__ import annotations

from enum import StrEnum


class LandingStatus(StrEnum):
    """Where a landed file is (landing_log.status): landing -> landed -> validated -> staged, or rejected;
    staged -> superseded when the partner re-sends the same file name; duplicate: bytes landed before."""

    LANDING = "landing"  # the row of a copy being written; never committed as such
    LANDED = "landed"
    VALIDATED = "validated"
    STAGED = "staged"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class LinkMethod(StrEnum):
    """How a partner record was linked to a roster person (links.method)."""

    NINO = "nino"
    UPN = "upn"
    PROBABILISTIC = "probabilistic"
    UNLINKED = "unlinked"


class ConsentState(StrEnum):
    """A person's consent state at R (person_consent.state): their latest tfp_evaluation event's, or none."""

    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    NONE = "none"


class FlagScope(StrEnum):
    """Whom family_flags counted (family_flags.scope): every roster person, or only the kept ones."""

    ALL = "all"
    KEPT = "kept"


# (table, column) -> the enum its CHECK constraint allows; the constraint is named ck_<table>_<column>
CHECKED: dict[tuple[str, str], type[StrEnum]] = {
    ("landing_log", "status"): LandingStatus,
    ("links", "method"): LinkMethod,
    ("person_consent", "state"): ConsentState,
    ("family_flags", "scope"): FlagScope,
}


def check_sql(column: str, allowed: type[StrEnum]) -> str:
    """The CHECK condition allowing exactly the enum's values."""
    return f"{column} IN ({', '.join(repr(m.value) for m in allowed)})"
