"""The README's threat model (outside review, issue 13 item 12) says what each reader can learn, and no more.

The recipient holds the linkage key, so any identifier small enough to enumerate can be recovered from its
match key. These tests show that the README's claim is true (the attack works) and that the README's table
covers every delivered file and every reader, without claiming that match keys hide identifiers.
"""

from __future__ import annotations

import re
import secrets
import string
from itertools import product
from pathlib import Path

from tfp.anonymise import match_keys

README = Path(__file__).resolve().parents[1] / "README.md"


def _mk_nino(key: bytes, nino: str) -> str:
    return match_keys(key, "", "", "", "", "", nino, "")["mk_nino"]


def test_the_recipient_recovers_a_nino_from_its_match_key_by_enumeration():
    """As the reviewer did: with the linkage key, enumerate candidates until the match key agrees."""
    linkage_key = secrets.token_bytes(32)
    target = "QQ12" + f"{secrets.randbelow(10_000):04d}" + secrets.choice("ABCD")
    published = _mk_nino(linkage_key, target)
    # a known prefix (an area's NINOs share theirs) leaves 40,000 candidates: a fraction of a second
    found = next(c for c in ("QQ12" + "".join(d) + s for d in product(string.digits, repeat=4) for s in "ABCD")
                 if _mk_nino(linkage_key, c) == published)
    assert found == target
    # without the linkage key the same enumeration finds nothing
    other_key = secrets.token_bytes(32)
    assert not any(_mk_nino(other_key, "QQ12" + "".join(d) + s) == published
                   for d in product(string.digits, repeat=2) for s in "ABCD")


def _threat_table() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Threat model", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_the_readme_table_covers_every_output_and_every_reader():
    rows = _threat_table()
    header = rows[0].lower()
    for reader in ("without keys", "the recipient", "a reader of published reports"):
        assert reader in header
    body = "\n".join(rows[2:])
    for output in ("tfp_submission_", "tfp_summary_", "tfp_withdrawals_", "tfp_progress_", "tfp_identifiers_",
                   "tfp_manifest_", "run report", "alerts"):
        assert output in body, output
    for row in rows[2:]:
        assert row.count("|") - row.count("\\|") == header.count("|"), row


def test_the_readme_does_not_claim_match_keys_hide_identifiers_from_the_recipient():
    submission = next(r for r in _threat_table() if "tfp_submission_" in r)
    assert re.search(r"recover any identifier", submission)
    assert "mk_nino" in submission and "mk_upn" in submission


def test_the_readme_says_only_the_linkage_function_can_open_the_identifiers_file():
    row = next(r for r in _threat_table() if "tfp_identifiers_" in r)
    assert "linkage function" in row and "cannot decrypt" in row and "analysts" in row
