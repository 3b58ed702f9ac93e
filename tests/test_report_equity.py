"""The run report's linkage equity section (issue 15 item 4): a borough where one group is under-linked on
purpose is flagged, and only that group; a borough where nothing lags flags nothing; a small group is
suppressed and never flagged; nothing personal reaches the report. Real feeds, the real pipeline
(extract, validate, stage, link, report) on SQLite.

The feeds are written by hand so that the groups are balanced by construction: every roster person has one
benefits record and one police incident, and every age band holds as many men as women. Then under-linking
one age band moves no other group away from the whole, and "exactly that group" is a fair assertion."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from helpers import write_config, write_feed
from tfp import pipeline
from tfp.feeds import DATASETS, SOURCES

R = date(2025, 3, 31)
BANDS = {"0-15": 5, "16-24": 18, "25-44": 30, "45-64": 50, "65+": 70}  # a base age in each band
PER_BAND_AND_SEX = 12
SMALL_GROUP = 3  # people of sex U, in band 45-64: fewer than suppress_below (10) in each dataset
FORENAMES = {"M": ["Adam", "Brian", "Callum", "Dennis", "Edward", "Fraser", "Gordon", "Harvey", "Ibrahim",
                   "Jasper", "Kieran", "Leonard"],
             "F": ["Alice", "Beatrice", "Carla", "Deborah", "Eleanor", "Fiona", "Gemma", "Harriet", "Imogen",
                   "Jessica", "Kirsty", "Lorraine"],
             "U": ["Morgan", "Robin", "Sasha"]}
SURNAMES = ["Ashworth", "Blackwood", "Crowther", "Dunmore", "Fairbairn", "Greenhalgh", "Hollingsworth",
            "Kettleborough", "Lockwood", "Moorcroft", "Northcott", "Pemberton", "Quarrington", "Rowbotham",
            "Sutcliffe", "Thistlewood", "Underhill", "Vickerstaff", "Whitmore", "Yardley"]


def _people() -> list[dict[str, str]]:
    """Distinct roster persons: each age band has PER_BAND_AND_SEX men and as many women, plus a small
    group of sex U. A birthday from April on means the age at R is the band's base age plus an offset."""
    people = []
    for band, base in BANDS.items():
        for sex in ("M", "F"):
            for i in range(PER_BAND_AND_SEX):
                people.append({"band": band, "sex": sex, "forename": FORENAMES[sex][i], "age": base + i % 3})
    for i in range(SMALL_GROUP):
        people.append({"band": "45-64", "sex": "U", "forename": FORENAMES["U"][i], "age": 50 + i})
    for n, p in enumerate(people):
        p["ref"] = f"P{n + 1:05d}"
        p["surname"] = SURNAMES[n % len(SURNAMES)] + ("" if n < len(SURNAMES) else f"-{SURNAMES[n // len(SURNAMES)]}")
        p["dob"] = date(R.year - p["age"] - 1, 4 + n % 9, 1 + n % 28).isoformat()
        p["postcode"] = f"E{1 + n % 17} {1 + n % 9}{'ABDEFGHJLNPQRSTUWXYZ'[n % 20]}{'ABDEFGHJLNPQRSTUWXYZ'[n // 20 % 20]}"
    return people


def _unlinkable(p: dict[str, str], n: int) -> dict[str, str]:
    """The same record with names, date of birth (same age) and postcode nobody on the roster has."""
    dob = date.fromisoformat(p["dob"])
    return {**p, "forename": "Quentin" if p["sex"] == "M" else "Ottoline",
            "surname": f"Zanzibar{'abcdefghijklmnopqrstuvwx'[n % 24]}",
            "dob": dob.replace(month=4 + (dob.month - 4 + 4) % 9, day=28 - dob.day % 27).isoformat(),
            "postcode": "N1 9ZZ"}


def _borough(root: Path, lagging_band: str | None, lagging_small_group: bool = False,
             url: str | None = None, twinned_band: str | None = None) -> tuple[Path, list]:
    """``twinned_band``: each person of that band has a same-sex twin on the roster (same surname, date of
    birth and postcode, another forename) and their records carry no forename: a near-tie for review."""
    people = _people()
    header = list(DATASETS["families"].columns)
    roster = []
    for n, p in enumerate(people):
        row = {"record_id": p["ref"], "forename": p["forename"], "surname": p["surname"],
               "date_of_birth": p["dob"], "sex": p["sex"], "postcode": p["postcode"],
               "family_ref": f"F{n + 1:05d}", "person_ref": p["ref"], "role": "child" if p["age"] < 18 else "adult",
               "programme_status": "intervention", "attached_date": "2024-10-01"}
        roster.append([row.get(c, "") for c in header])
        if p["band"] == twinned_band:
            twin = {**row, "record_id": f"T{p['ref']}", "person_ref": f"T{p['ref']}",
                    "forename": FORENAMES[p["sex"]][(FORENAMES[p["sex"]].index(p["forename"]) + 6) % 12]}
            roster.append([twin.get(c, "") for c in header])
    write_feed(root, "children_services", f"families_{R:%Y%m%d}.csv", header, roster)
    benefits, incidents = [], []
    for n, p in enumerate(people):
        if p["band"] == lagging_band or (lagging_small_group and p["sex"] == "U"):
            p = _unlinkable(p, n)
        if p["band"] == twinned_band:
            p = {**p, "forename": ""}
        person = [p["forename"], p["surname"], p["dob"], p["sex"], p["postcode"]]
        benefits.append([f"DWP{n:05d}", *person, "", "uc", "Y", "2024-06-01", ""])
        incidents.append([f"INC{n:05d}", *person, "", "2024-11-01", "asb", "subject", ""])
    write_feed(root, "dwp", f"benefits_{R:%Y%m%d}.csv", list(DATASETS["benefits"].columns), benefits)
    write_feed(root, "police", f"incidents_{R:%Y%m%d}.csv", list(DATASETS["incidents"].columns), incidents)
    return write_config(root, url or f"sqlite:///{root / 'warehouse.db'}"), people


def _night(config: Path) -> tuple[dict, str]:
    path = str(config)
    pipeline.check_setup(path, R)
    for source in SOURCES:
        pipeline.extract(path, R, source)
        pipeline.validate(path, R, source)
        pipeline.stage(path, R, source)
    linked = pipeline.link(path, R)
    report = Path(pipeline.report(path, R, {"link": linked})["report"])
    return json.loads(report.read_text()), report.with_suffix(".html").read_text(encoding="utf-8")


def _groups(report: dict) -> dict[tuple[str, str], dict]:
    return {(g["dimension"], g["group"]): g for g in report["linkage_equity"]["groups"]}


@pytest.fixture(scope="module")
def lagging(tmp_path_factory):
    """Everyone aged 16-24 cannot link, nor can the small group of sex U."""
    from conftest import make_keys

    with pytest.MonkeyPatch.context() as mp:
        for name, value in make_keys().items():
            mp.setenv(name, value)
        config, people = _borough(tmp_path_factory.mktemp("lagging"), "16-24", lagging_small_group=True)
        yield (*_night(config), people)


def test_the_under_linked_group_and_only_it_is_flagged(lagging):
    report, page, _ = lagging
    equity = report["linkage_equity"]
    groups = _groups(report)
    assert [key for key, g in groups.items() if g["flagged"]] == [("age_band", "16-24")]
    assert equity["flags"] == report["linkage_equity_flags"] == 1
    assert groups[("age_band", "16-24")]["link_rate"] == 0.0
    assert groups[("age_band", "16-24")]["linked"] == "0" and groups[("age_band", "16-24")]["records"] == "50"
    # the same denominators as the report's linkage rates by dataset
    for dataset, counts in report["linkage"].items():
        g = groups[("dataset", dataset)]
        assert g["link_rate"] == round(counts["linked"] / (counts["linked"] + counts["unlinked"]), 3)
    assert equity["margin"] == 0.05
    assert "Linkage equity" in page and "1 flagged" in page and "class=flagged" in page


def test_a_small_group_is_suppressed_and_never_flagged(lagging):
    report, page, _ = lagging
    small = _groups(report)[("sex", "not known")]
    assert small["records"] == "[c]" and small["linked"] == "0"  # 2 * 3 records, none linked
    assert small["link_rate"] is None and small["flagged"] is False


def test_nothing_queued_gives_a_queue_rate_of_zero(lagging):
    report, page, _ = lagging
    assert report["linkage_equity"]["queue_rate"] == 0.0 and report["review_queued"] == 0
    assert all(g["queue_rate"] in (0.0, None) for g in report["linkage_equity"]["groups"])


def test_the_queue_rate_shows_the_group_whose_records_wait_for_review(tmp_path, keys_env):
    """Everyone aged 65+ has a twin on the roster and records without a forename: a near-tie each, so
    exactly that band's records go to review (queue rate 1, link rate 0, flagged); the others' queue
    rate is 0. The small group keeps [c] and no rate; the HTML shows the queue column and the counts."""
    config, people = _borough(tmp_path, None, twinned_band="65+")
    report, page = _night(config)
    groups = _groups(report)
    old = groups[("age_band", "65+")]
    assert old["queue_rate"] == 1.0 and old["link_rate"] == 0.0 and old["flagged"]
    assert old["queued"] == old["records"] == "50"
    assert all(g["queue_rate"] == 0.0 for key, g in groups.items()
               if key[0] == "age_band" and key[1] != "65+")
    assert groups[("sex", "not known")]["queue_rate"] is None and groups[("sex", "not known")]["queued"] == "0"
    assert report["linkage_equity"]["queue_rate"] == round(48 / (2 * len(people)), 3)
    # the review counts: 48 records (24 people x 2 datasets) queued, two pairs each, none decided yet
    assert report["review"] == {"queued": 48, "decided": 0, "pending": 96, "pairs": 96, "reviewed_links": 0}
    assert report["review_queued"] == 48 and report["review_pending"] == 96
    assert "Linkage review queue" in page and "<th>queue rate</th>" in page
    text = json.dumps(report) + page
    for p in people:
        for value in (p["surname"], p["dob"], p["postcode"], p["ref"]):
            assert value not in text


def test_no_personal_value_in_the_report(lagging):
    report, page, people = lagging
    text = json.dumps(report) + page
    for p in people:
        for value in (p["surname"], p["dob"], p["postcode"]):
            assert value not in text


def test_nothing_lags_nothing_is_flagged(tmp_path, keys_env, warehouse_url):
    """On both databases: the equity SQL (ages from tfp_yyyymmdd) is portable."""
    config, _ = _borough(tmp_path, None, url=warehouse_url)
    report, page = _night(config)
    groups = _groups(report)
    assert report["linkage_equity_flags"] == 0 and not any(g["flagged"] for g in groups.values())
    assert report["linkage_equity"]["link_rate"] == 1.0
    assert groups[("sex", "not known")]["records"] == "[c]" and groups[("sex", "not known")]["link_rate"] is None
    assert "0 flagged" in page
