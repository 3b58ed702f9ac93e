"""Property-based tests (hypothesis) for the parser, the identifier normalisers and the match-key
recipe: any bytes are read or refused by name, never crash; what a CSV writer wrote is read back as
written; normalising is idempotent and ignores presentation; match keys follow only the values."""

from __future__ import annotations

import csv
import io
import re
import secrets
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfp import feeds, identifiers
from tfp.anonymise import match_keys
from tfp.validate import ROW, FileRejected, read_feed, validate_feed

NEEDS = feeds.DATASETS["needs"].columns
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


def _csv(rows: list[list[str]], header=NEEDS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@FAST
@given(st.binary(max_size=400))
def test_any_bytes_are_read_or_refused_by_name(data):
    try:
        frame = read_feed(data, "needs_20250131.csv", "needs")
    except FileRejected as e:
        assert e.file_name == "needs_20250131.csv" and e.rule
        return
    assert list(frame.columns) == [*NEEDS, ROW]


@FAST
@given(st.binary(max_size=200).map(lambda tail: b"record_id,person_ref,need,start_date,end_date\r\n" + tail))
def test_any_body_under_a_good_header_is_read_or_refused_by_name(data):
    try:
        frame = read_feed(data, "needs_20250131.csv", "needs")
    except FileRejected:
        return
    assert frame[ROW].tolist() == list(range(1, len(frame) + 1))


@FAST
@given(st.lists(st.lists(TEXT, min_size=5, max_size=5), max_size=8), st.sampled_from(["\r\n", "\n"]),
       st.booleans())
def test_what_a_csv_writer_wrote_is_read_back_as_written(rows, newline, bom):
    data = _csv(rows).replace(b"\r\n", newline.encode()) if newline == "\n" and not any(
        "\r" in v for r in rows for v in r) else _csv(rows)
    frame = read_feed((b"\xef\xbb\xbf" if bom else b"") + data, "needs_20250131.csv", "needs")
    got = frame[list(NEEDS)].values.tolist()
    # a row whose every value is empty is written as ",,,," and read back as five empty values
    assert got == rows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TEXT, st.sampled_from(["early_help", "neet", "x", ""]),
                          st.sampled_from(["2024-01-01", "2024-02-30", "", "01/01/2024", "2030-01-01"])),
                min_size=1, max_size=12))
def test_validation_accounts_for_every_row(rows):
    data = _csv([[f"r{i}", ref, need, start, ""] for i, (ref, need, start) in enumerate(rows)])
    frame = read_feed(data, "needs_20250131.csv", "needs")
    result = validate_feed(frame, "needs", date(2025, 1, 31), "needs_20250131.csv", 1.0)
    assert result.rows_read == len(rows) == len(result.clean) + len(result.quarantined)
    assert all(result.quarantined["rules"] != "")


POSTCODES = st.from_regex(identifiers.POSTCODE, fullmatch=True)
NINOS = st.from_regex(identifiers.NINO, fullmatch=True)


def _scramble(value: str, data) -> str:
    """The same identifier as a person might type it: any case, spaces anywhere."""
    out = []
    for c in value.replace(" ", ""):
        out.append(c.lower() if data.draw(st.booleans()) else c)
        out.append(data.draw(st.sampled_from(["", "", " ", "  "])))
    return "".join(out)


@FAST
@given(POSTCODES, st.data())
def test_a_postcode_is_valid_however_it_is_typed(postcode, data):
    typed = _scramble(postcode, data)
    assert identifiers.is_valid_postcode(typed)
    assert identifiers.normalise_postcode(typed) == postcode
    assert identifiers.normalise_postcode(identifiers.normalise_postcode(typed)) == postcode


@FAST
@given(NINOS, st.data())
def test_a_nino_is_valid_however_it_is_typed(nino, data):
    typed = _scramble(nino, data)
    assert identifiers.is_valid_nino(typed) and identifiers.normalise_nino(typed) == nino


@FAST
@given(st.text(alphabet="0123456789", min_size=11, max_size=11),
       st.sampled_from(list("0123456789" + identifiers.UPN_LETTERS)))
def test_a_upn_is_valid_with_its_check_letter_only(body11, last):
    body = body11 + last
    good = identifiers.upn_check_letter(body) + body
    assert identifiers.is_valid_upn(good) and identifiers.is_valid_upn(good.lower())
    for wrong in set(identifiers.UPN_LETTERS) - {good[0], "I", "O", "S"}:
        assert not identifiers.is_valid_upn(wrong + body)


@FAST
@given(TEXT)
def test_a_normalised_name_is_capital_letters_only_and_idempotent(name):
    normal = identifiers.normalise_name(name)
    assert re.fullmatch(r"[A-Z]*", normal)
    assert identifiers.normalise_name(normal) == normal


ASCII_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12)
ACCENTS = ["\u0301", "\u0300", "\u0308", "\u0327", "\u030c", ""]


@FAST
@given(ASCII_NAME, st.data())
def test_case_accents_and_punctuation_do_not_change_a_name(name, data):
    decorated = "".join(c + data.draw(st.sampled_from(ACCENTS)) + data.draw(st.sampled_from(["", "", "-", "'", " "]))
                        for c in name)
    assert identifiers.normalise_name(decorated) == name.upper()


KEY = secrets.token_bytes(32)


@FAST
@given(ASCII_NAME, ASCII_NAME, st.dates(date(1900, 1, 1), date(2025, 3, 31)), POSTCODES,
       st.sampled_from(["M", "F", "U", ""]), NINOS, st.data())
def test_match_keys_depend_on_values_not_on_presentation(fore, sur, dob, postcode, sex, nino, data):
    plain = match_keys(KEY, fore, sur, dob.isoformat(), postcode, sex, nino, "")
    typed = match_keys(KEY, f" {fore.lower()}\u0301", f"{sur.upper()}-", dob.isoformat(),
                       _scramble(postcode, data), sex, _scramble(nino, data), "")
    assert typed == plain
    assert all(re.fullmatch(r"[0-9a-f]{64}", plain[k]) for k in ("mk1", "mk2", "mk3", "mk4", "mk5", "mk_nino"))
    assert plain["mk_upn"] == ""
    no_postcode = match_keys(KEY, fore, sur, dob.isoformat(), "", sex, nino, "")
    assert no_postcode["mk1"] == no_postcode["mk2"] == no_postcode["mk5"] == ""
    assert no_postcode["mk3"] == plain["mk3"] and no_postcode["mk4"] == plain["mk4"]
    other = match_keys(secrets.token_bytes(32), fore, sur, dob.isoformat(), postcode, sex, nino, "")
    assert not (set(other.values()) & set(plain.values())) - {""}
