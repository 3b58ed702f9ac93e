"""De-identification (contract section 7): tokens, match keys, k-anonymity, disclosure control and the
three output files, checked against computations written here independently of the code."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import random
import re
import unicodedata
import uuid
from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import insert

from tfp.anonymise import (
    SUBMISSION_COLUMNS,
    build_outputs,
    disclose,
    family_token,
    k_anonymise,
    match_keys,
    person_token,
)
from tfp.config import load_keys, parse_config
from tfp.consent import compute_consent
from tfp.feeds import DATASETS, SOURCES
from tfp.warehouse import FLAGS, connect, family_flags, landing_log, staging

R = date(2025, 3, 31)
KEY = bytes(range(32))
LINK = bytes(range(32, 64))


def hm(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def name(text: str) -> str:
    """The contract's name recipe, by hand: NFKD, drop combining marks, upper case, keep A-Z."""
    out = ""
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch):
            continue
        ch = ch.upper()
        if "A" <= ch <= "Z":
            out += ch
    return out


# -- tokens and match keys -------------------------------------------------------------------------

def test_tokens_are_keyed_hashes_with_their_prefix():
    assert person_token(KEY, "P123") == hm(KEY, "person:P123")
    assert family_token(KEY, "F9") == hm(KEY, "family:F9")
    assert person_token(KEY, "X") != family_token(KEY, "X")
    assert re.fullmatch(r"[0-9a-f]{64}", person_token(KEY, "P123"))
    assert person_token(LINK, "P123") != person_token(KEY, "P123")


@pytest.mark.parametrize(("forename", "surname", "fore", "sur"), [
    ("Zoë", "O'Neil", "ZOE", "ONEIL"),
    ("Anne-Marie", "Smith-Jones", "ANNEMARIE", "SMITHJONES"),
    ("  józef ", "Brontë", "JOZEF", "BRONTE"),
    ("Al", "Ng", "AL", "NG"),  # shorter than three letters: the whole name
])
def test_match_keys_follow_the_recipes(forename, surname, fore, sur):
    assert name(forename) == fore and name(surname) == sur  # the hand recipe agrees with the expectation
    keys = match_keys(LINK, forename, surname, date(1985, 3, 7), "sw1a 1aa", "F", "ab 12 34 56 c", "B801200005001")
    dob, post = "19850307", "SW1A1AA"
    assert keys == {
        "mk1": hm(LINK, f"{fore}|{sur}|{dob}|{post}"),
        "mk2": hm(LINK, f"{fore[0]}|{sur}|{dob}|{post}"),
        "mk3": hm(LINK, f"{fore}|{sur}|{dob}"),
        "mk4": hm(LINK, f"{fore[:3]}|{sur[:3]}|{dob}|F"),
        "mk5": hm(LINK, f"{sur}|{dob}|{post}"),
        "mk_nino": hm(LINK, "AB123456C"),
        "mk_upn": hm(LINK, "B801200005001"),
        "mk_nhs": "",  # no NHS number given
    }


def test_mk_nhs_is_the_hmac_of_the_ten_digits_and_empty_when_unknown():
    """Contract section 10: mk_nhs = HMAC-SHA256(linkage key, the 10 digits), after mk_upn."""
    keys = match_keys(LINK, "Ann", "Ng", date(1985, 3, 7), "SW1A 1AA", "F", None, None, "9434765919")
    assert keys["mk_nhs"] == hm(LINK, "9434765919")
    assert match_keys(LINK, "Ann", "Ng", date(1985, 3, 7), "SW1A 1AA", "F", None, None, "943 476 5919") == keys
    for unknown in (None, "", float("nan"), pd.NA):
        assert match_keys(LINK, "Ann", "Ng", date(1985, 3, 7), "SW1A 1AA", "F", None, None, unknown)["mk_nhs"] == ""
    assert list(keys)[-2:] == ["mk_upn", "mk_nhs"]
    from tfp.anonymise import SUBMISSION_COLUMNS

    assert SUBMISSION_COLUMNS[SUBMISSION_COLUMNS.index("mk_upn") + 1] == "mk_nhs"


def test_match_keys_accept_warehouse_shapes_of_a_date():
    as_date = match_keys(LINK, "Zoë", "Ng", date(1985, 3, 7), "SW1A 1AA", "M", None, None)
    assert match_keys(LINK, "Zoë", "Ng", "1985-03-07", "SW1A 1AA", "M", None, None) == as_date
    assert match_keys(LINK, "Zoë", "Ng", pd.Timestamp("1985-03-07"), "SW1A 1AA", "M", None, None) == as_date


def test_missing_inputs_give_empty_keys():
    full = match_keys(LINK, "Zoë", "Ng", date(1985, 3, 7), "SW1A 1AA", "F", "AB123456C", "B801200005001",
                      "9434765919")
    assert all(full.values())
    no_fore = match_keys(LINK, None, "Ng", date(1985, 3, 7), "SW1A 1AA", "F", "AB123456C", "B801200005001",
                         "9434765919")
    assert [k for k, v in no_fore.items() if not v] == ["mk1", "mk2", "mk3", "mk4"]
    assert no_fore["mk5"] == full["mk5"]
    no_post = match_keys(LINK, "Zoë", "Ng", date(1985, 3, 7), "", "F", float("nan"), pd.NA)
    assert [k for k, v in no_post.items() if not v] == ["mk1", "mk2", "mk5", "mk_nino", "mk_upn", "mk_nhs"]
    no_dob = match_keys(LINK, "Zoë", "Ng", None, "SW1A 1AA", "F", "AB123456C", "")
    assert [k for k, v in no_dob.items() if not v] == ["mk1", "mk2", "mk3", "mk4", "mk5", "mk_upn", "mk_nhs"]
    only_punctuation = match_keys(LINK, "-'", "Ng", date(1985, 3, 7), "SW1A 1AA", "F", None, None)
    assert only_punctuation["mk1"] == "" and only_punctuation["mk5"] == full["mk5"]


def test_an_unknown_sex_is_u_in_mk4():
    keys = match_keys(LINK, "Zoë", "Ng", date(1985, 3, 7), "SW1A 1AA", None, None, None)
    assert keys["mk4"] == hm(LINK, "ZOE|NG|19850307|U")


# -- k-anonymity -----------------------------------------------------------------------------------

QI = ["year_of_birth", "postcode_district", "sex"]


def random_frame(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    districts = ["SW1A", "SW2", "SW15", "SE1", "SE15", "N1", "E1", "E14", ""]
    return pd.DataFrame({
        "id": range(n),
        "year_of_birth": [rng.choice([str(rng.randint(1935, 2022))] * 20 + [""]) for _ in range(n)],
        "postcode_district": [rng.choice(districts) for _ in range(n)],
        "sex": [rng.choice("MFFMU") for _ in range(n)],
    })


def test_k_anonymity_holds_for_k5_on_2000_random_rows():
    frame = random_frame(2000, seed=7)
    out = k_anonymise(frame, 5)
    assert out.groupby(QI, dropna=False).size().min() >= 5
    assert list(out["id"]) == list(frame["id"])  # same rows, same order; only the QI values change
    assert out["year_of_birth"].map(lambda v: bool(re.fullmatch(r"\d{4}|\d{4}-\d{4}|\*|", v))).all()
    bands = out["year_of_birth"][out["year_of_birth"].str.contains("-")]
    assert bands.map(lambda b: int(b[:4]) % 5 == 0 and int(b[5:]) == int(b[:4]) + 4).all()
    assert out["postcode_district"].map(lambda v: bool(re.fullmatch(r"[A-Z]{1,2}\d[A-Z\d]?|[A-Z]{1,2}|\*|", v))).all()
    # generalising is a coarsening of the original value, never a different one
    for before, after in zip(frame.itertuples(), out.itertuples(), strict=True):
        if after.year_of_birth not in ("*", before.year_of_birth):
            assert int(after.year_of_birth[:4]) <= int(before.year_of_birth) <= int(after.year_of_birth[5:])
        if after.postcode_district not in ("*", before.postcode_district):
            assert before.postcode_district.startswith(after.postcode_district)
        assert after.sex in ("*", before.sex)


def test_common_combinations_keep_their_detail():
    common = pd.DataFrame({"year_of_birth": ["1980"] * 6, "postcode_district": ["SW1A"] * 6, "sex": ["F"] * 6})
    rare = pd.DataFrame({"year_of_birth": ["1981", "1983", "1984", "1982", "1990"],
                         "postcode_district": ["SW1A", "SW1A", "SW1A", "SW1A", "SW2"], "sex": ["F"] * 5})
    out = k_anonymise(pd.concat([common, rare], ignore_index=True), 5)
    assert out.iloc[:6][QI].values.tolist() == [["1980", "SW1A", "F"]] * 6
    assert out.groupby(QI).size().min() >= 5


def test_k1_is_identity_and_the_result_does_not_depend_on_row_order():
    frame = random_frame(300, seed=3)
    pd.testing.assert_frame_equal(k_anonymise(frame, 1), frame)
    shuffled = frame.sample(frac=1, random_state=1)
    a = k_anonymise(frame, 5).set_index("id").sort_index()
    b = k_anonymise(shuffled, 5).set_index("id").sort_index()
    pd.testing.assert_frame_equal(a, b)


def test_fewer_rows_than_k_are_fully_suppressed_and_a_small_residue_absorbs_whole_classes():
    tiny = pd.DataFrame({"year_of_birth": ["1980", "1990"], "postcode_district": ["SW1A", "N1"], "sex": ["F", "M"]})
    assert k_anonymise(tiny, 5)[QI].values.tolist() == [["*", "*", "*"]] * 2
    # ten identical rows stay; three unique rows cannot reach 5 alone, so the smallest other class joins them
    base = pd.DataFrame({"year_of_birth": ["1980"] * 10 + ["1960"] * 5, "postcode_district": ["SW1A"] * 15,
                         "sex": ["F"] * 10 + ["M"] * 5})
    odd = pd.DataFrame({"year_of_birth": ["1901", "2020", ""], "postcode_district": ["E1", "N1", ""],
                        "sex": ["U", "F", "M"]})
    out = k_anonymise(pd.concat([base, odd], ignore_index=True), 5)
    assert out.groupby(QI).size().min() >= 5
    assert out.iloc[:10][QI].values.tolist() == [["1980", "SW1A", "F"]] * 10


# -- disclosure ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "expected"), [
    (0, "0"), (1, "[c]"), (9, "[c]"), (10, "10"), (12, "10"), (13, "15"), (14, "15"), (17, "15"), (18, "20"),
    (1234, "1235"),
])
def test_disclose_with_suppress_below_10_round_to_5(count, expected):
    assert disclose(count, 10, 5) == expected


def test_disclose_rounds_halves_up_and_other_settings():
    assert disclose(15, 10, 10) == "20"  # 1.5 tens -> 2 tens
    assert disclose(25, 10, 10) == "30"
    assert disclose(24, 10, 10) == "20"
    assert disclose(11, 1, 2) == "12"  # 5.5 -> 6
    assert disclose(3, 1, 1) == "3"  # no suppression, no rounding
    assert disclose(2, 1, 5) == "0"  # rounds to nothing: rounding still applies
    with pytest.raises(ValueError):
        disclose(-1, 10, 5)


# -- the outputs from the warehouse ----------------------------------------------------------------

def config(tmp_path, *, k: int = 1, suppress_below: int = 1, round_to: int = 1):
    return parse_config({
        "local_authority": {"code": "E09000031", "name": "Example Borough"},
        "warehouse_url": "sqlite:///unused.db",
        "work_dir": "work",
        "sources": {s: {"transport": "directory", "path": f"in/{s}"}
                    for s in SOURCES},
        "quality": {"max_bad_row_fraction": 0.05},
        "linkage": {"match_probability_threshold": 0.95},
        "criteria": {"min_problems": 2, "lookback_months": 12, "persistent_absence_rate": 0.1,
                     "fixed_term_exclusions": 3},
        "consent": {"lawful_basis": "consent"},
        "anonymisation": {"k": k},
        "disclosure": {"suppress_below": suppress_below, "round_to": round_to},
        "delivery": {"transport": "directory", "path": "out", "encryption": "none"},
        "retention": {"landing_days": 30, "quarantine_days": 30, "staging_months": 15,
                      "delete_all_after": date(2027, 3, 31)},
        "keys": {"pseudonym_key_env": "TFP_PSEUDONYM_KEY", "linkage_key_env": "TFP_LINKAGE_KEY",
                 "signing_key_env": "TFP_SIGNING_KEY"},
    }, tmp_path)


def land(conn, dataset: str, file_date: date, rows: list[dict]) -> None:
    landing_id = conn.execute(insert(landing_log).values(
        source=DATASETS[dataset].source, dataset=dataset, file_name=f"{dataset}_{file_date:%Y%m%d}.csv",
        file_date=file_date, sha256=uuid.uuid4().hex * 2, bytes=1, landed_at=datetime.now(UTC),
        landed_by_run=file_date, status="staged",
    )).inserted_primary_key[0]
    conn.execute(insert(staging[dataset]), [
        {"landing_id": landing_id, "file_date": file_date, "row_number": i, **row} for i, row in enumerate(rows, 1)
    ])


# person_ref -> (family, status, forename, surname, dob, sex, postcode, nino, upn, role, consent event)
PEOPLE = {
    "PA": ("F1", "intervention", "Zoë", "O'Neil", date(1982, 4, 2), "F", "SW1A 1AA", "AB123456C", None, "adult", "given"),
    "PB": ("F1", "intervention", "Bob", "O'Neil", date(1980, 1, 9), "M", "SW1A 1AA", "CE123456A", None, "adult", "refused"),
    "PC": ("F1", "intervention", "Cy", "O'Neil", date(2012, 6, 1), "U", "SW1A 1AA", None, "B801200005001", "child", None),
    "PD": ("F2", "comparison", "Dee", "Smith-Jones", date(1975, 2, 2), "F", "N1 9GU", None, None, "adult", "given"),
    "PE": ("F2", "comparison", "Eve", "Smith-Jones", date(1977, 3, 3), "F", "N1 9GU", None, None, "adult", "withdrawn"),
    "PG": ("F3", "comparison", "Gus", "Brown", date(1990, 5, 5), "M", "E1 6AN", None, None, "adult", "given"),
    "PH": ("F4", "comparison", "Hal", "Grey", date(1991, 5, 5), "M", "E1 6AN", None, None, "adult", "refused"),
    **{f"PK{i}": ("F5", "intervention", f"Kit{chr(65 + i)}", "Kay", date(2010, 1, 1 + i), "M", "SE15 4QF", None, None,
                  "child", "given") for i in range(6)},
}
# family -> (status, eligible, flags set) in scope kept; F4 has no kept member, so it is only in scope all
FAMILIES = {"F1": ("intervention", 0, {"health"}), "F2": ("comparison", 1, {"crime_asb", "worklessness"}),
            "F3": ("comparison", 0, set()), "F5": ("intervention", 1, {"school_attendance", "health"})}


@pytest.fixture
def warehouse(warehouse_url):
    engine = connect(warehouse_url)
    with engine.begin() as conn:
        land(conn, "families", date(2025, 3, 30), [
            {"record_id": f"r{ref}", "person_ref": ref, "family_ref": f, "programme_status": st, "forename": fn,
             "surname": sn, "date_of_birth": dob, "sex": sex, "postcode": pc, "nino": nino, "upn": upn,
             "uprn": "100023336956", "role": role,
             "attached_date": date(2024, 5, 17) if st == "intervention" else None}
            for ref, (f, st, fn, sn, dob, sex, pc, nino, upn, role, _) in PEOPLE.items()
        ])
        land(conn, "consent", date(2025, 3, 30), [
            {"record_id": f"c{ref}", "person_ref": ref, "purpose": "tfp_evaluation", "status": ev,
             "recorded_at": datetime(2025, 1, 20, 10, 30)}
            for ref, (*_, ev) in PEOPLE.items() if ev
        ])
        rows = [{"reference_date": R, "scope": "kept", "family_ref": f, "programme_status": st,
                 **{flag: int(flag in on) for flag in FLAGS}, "problem_count": len(on), "eligible": el}
                for f, (st, el, on) in FAMILIES.items()]
        rows.append({"reference_date": R, "scope": "all", "family_ref": "F4", "programme_status": "comparison",
                     **{flag: 1 for flag in FLAGS}, "problem_count": 6, "eligible": 1})
        conn.execute(insert(family_flags), rows)
    return engine


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_build_outputs_under_consent(warehouse, tmp_path, keys_env):
    keys = load_keys(config(tmp_path))
    with pytest.raises(RuntimeError, match="consent stage"):
        build_outputs(warehouse, R, config(tmp_path), keys)
    compute_consent(warehouse, R, "consent")
    out = build_outputs(warehouse, R, config(tmp_path), keys)

    assert out.submission.startswith(",".join(SUBMISSION_COLUMNS) + "\n")
    assert "\r" not in out.submission + out.summary + out.withdrawals
    assert out.submission.endswith("\n")
    rows = parse(out.submission)
    assert out.submission_rows == len(rows) == 8
    # only kept members (PA, PD, PK*) of families that are intervention (F1, F5) or eligible (F2, F5); F3 is neither
    kept = ("PA", "PD", *(f"PK{i}" for i in range(6)))
    assert {r["person_token"] for r in rows} == {person_token(keys.pseudonym, p) for p in kept}
    assert [(r["family_token"], r["person_token"]) for r in rows] == sorted(
        (r["family_token"], r["person_token"]) for r in rows)
    pa = next(r for r in rows if r["person_token"] == person_token(keys.pseudonym, "PA"))
    assert pa == {
        "reference_date": "2025-03-31", "la_code": "E09000031",
        "family_token": family_token(keys.pseudonym, "F1"), "person_token": person_token(keys.pseudonym, "PA"),
        **match_keys(keys.linkage, "Zoë", "O'Neil", date(1982, 4, 2), "SW1A 1AA", "F", "AB123456C", None),
        "role": "adult", "sex": "F", "year_of_birth": "1982", "postcode_district": "SW1A",
        "programme_status": "intervention", "attached_month": "2024-05",
        "crime_asb": "0", "school_attendance": "0", "children_need_help": "0", "worklessness": "0",
        "domestic_abuse": "0", "health": "1", "problem_count": "1", "eligible": "0",
    }
    assert pa["mk1"] == hm(keys.linkage, "ZOE|ONEIL|19820402|SW1A1AA")
    pd_row = next(r for r in rows if r["person_token"] == person_token(keys.pseudonym, "PD"))
    assert (pd_row["attached_month"], pd_row["eligible"], pd_row["crime_asb"], pd_row["mk_nino"]) == ("", "1", "1", "")

    everything = out.submission + out.summary + out.withdrawals
    for excluded in ("PB", "PC", "PG", "PH"):
        assert person_token(keys.pseudonym, excluded) not in everything
    assert person_token(keys.pseudonym, "PE") not in out.submission  # withdrawn: only in the withdrawals
    assert family_token(keys.pseudonym, "F4") not in everything
    for personal in ("Zo", "O'Neil", "ONEIL", "SW1A 1AA", "1AA", "AB123456C", "100023336956", "1982-04-02", "PA,", "F1,"):
        assert personal not in everything

    assert out.withdrawals == f"person_token,withdrawn_on\n{person_token(keys.pseudonym, 'PE')},2025-01-20\n"
    assert out.withdrawal_rows == 1

    summary = [(r["measure"], r["programme_status"], r["count"]) for r in parse(out.summary)]
    assert out.summary.startswith("measure,programme_status,count\n")
    assert [m for m, _, _ in summary[::3]] == ["families_assessed", "families_eligible", *FLAGS, "persons_submitted"]
    assert [s for _, s, _ in summary] == ["intervention", "comparison", "all"] * 9
    counts = {(m, s): c for m, s, c in summary}
    assert [counts["families_assessed", s] for s in ("intervention", "comparison", "all")] == ["2", "2", "4"]
    assert [counts["families_eligible", s] for s in ("intervention", "comparison", "all")] == ["1", "1", "2"]
    assert [counts["health", s] for s in ("intervention", "comparison", "all")] == ["2", "0", "2"]
    assert [counts["crime_asb", s] for s in ("intervention", "comparison", "all")] == ["0", "1", "1"]
    assert [counts["persons_submitted", s] for s in ("intervention", "comparison", "all")] == ["7", "1", "8"]
    assert out.counts == {"families_assessed": 4, "families_eligible": 2, "persons_submitted": 8, "withdrawals": 1}


def test_build_outputs_refuses_when_criteria_did_not_run(warehouse, tmp_path, keys_env):
    compute_consent(warehouse, R, "consent")
    with warehouse.begin() as conn:
        conn.execute(family_flags.delete())
    with pytest.raises(RuntimeError, match="criteria stage"):
        build_outputs(warehouse, R, config(tmp_path), load_keys(config(tmp_path)))


def test_build_outputs_under_public_task_with_disclosure_and_k(warehouse, tmp_path, keys_env):
    compute_consent(warehouse, R, "public_task")
    keys = load_keys(config(tmp_path))
    out = build_outputs(warehouse, R, config(tmp_path, k=3, suppress_below=10, round_to=5), keys)
    rows = parse(out.submission)
    # PC has no consent event: kept under public_task
    kept = ("PA", "PC", "PD", *(f"PK{i}" for i in range(6)))
    assert {r["person_token"] for r in rows} == {person_token(keys.pseudonym, p) for p in kept}
    quasi = {r["person_token"]: (r["year_of_birth"], r["postcode_district"], r["sex"]) for r in rows}
    # six children share 2010/SE15/M and keep it; the three others only reach k=3 fully suppressed
    assert sorted(quasi.values()) == [("*", "*", "*")] * 3 + [("2010", "SE15", "M")] * 6
    assert quasi[person_token(keys.pseudonym, "PA")] == ("*", "*", "*")
    assert {r["count"] for r in parse(out.summary)} <= {"0", "[c]"}
    again = build_outputs(warehouse, R, config(tmp_path, k=3, suppress_below=10, round_to=5), keys)
    assert again == out  # byte-identical for the same inputs
