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
    NHS_NUMBER = "nhs_number"  # contract section 10: a health record's NHS number equals a roster person's
    PROBABILISTIC = "probabilistic"
    UNLINKED = "unlinked"
    # issue 15: left unlinked because it waits for a reviewer (in the review band, or a near-tie)
    QUEUED = "queued"
    # linked to the person a reviewer's decision named (tfp review import), not by the model alone
    REVIEWED = "reviewed"


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


class ReviewReason(StrEnum):
    """Why a (record, person) pair went to the review queue on a night (review_night.reason)."""

    BAND = "band"  # the record's best candidate's probability falls in linkage.review_band
    NEAR_TIE = "near_tie"  # its best two candidates are too close to tell apart (linkage.review_tie_ratio)


class ReviewDecision(StrEnum):
    """What a reviewer decided about a (record, person) pair (review_decision.decision)."""

    LINK = "link"
    NOT_A_LINK = "not_a_link"


# (table, column) -> the enum its CHECK constraint allows; the constraint is named ck_<table>_<column>
CHECKED: dict[tuple[str, str], type[StrEnum]] = {
    ("landing_log", "status"): LandingStatus,
    ("links", "method"): LinkMethod,
    ("person_consent", "state"): ConsentState,
    ("family_flags", "scope"): FlagScope,
    ("review_night", "reason"): ReviewReason,
    ("review_decision", "decision"): ReviewDecision,
}


def check_sql(column: str, allowed: type[StrEnum]) -> str:
    """The CHECK condition allowing exactly the enum's values."""
    return f"{column} IN ({', '.join(repr(m.value) for m in allowed)})"
