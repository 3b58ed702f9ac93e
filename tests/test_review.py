"""The linkage review queue (issue 15 item 3), end to end on a generated borough with the real pipeline
(extract, validate, stage, link with real Splink, report) on SQLite: night R1 queues the doubtful records,
`tfp review export` writes them age-encrypted for the test's own reviewer identity, the reviewer decides
from the generator's truth, `tfp review import` records the decisions (encrypted, with --identity), the
next night and a backfill of R1 follow them as of their date, and retention deletes the queue's and the
decisions' personal fields on withdrawal, on age-out and at the programme's end. Nothing personal reaches
a log, the link task's XCom, the console or the run report.

Then the pieces on their own: which pairs go to review (band, near-tie), a reviewer's decisions inside
``link_records``, and every way an import is refused."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from helpers import leak_pattern, personal_values, write_config
from tfp import pipeline
from tfp.feeds import SOURCES
from tfp.statuses import LinkMethod, ReviewReason

R1 = date(2025, 3, 31)
R2 = date(2025, 4, 1)
ON_R1 = "2025-03-31T21:00:00+01:00"  # 31 March in London (BST): applies to R1 and later
ON_R2 = "2025-04-01T09:30:00+01:00"  # 1 April: applies to R2, not to a backfill of R1
BAND = (0.80, 0.999999)


def _night(config: Path, day: date) -> tuple[dict, dict]:
    """One night's stages up to the report, as the DAG runs them; (link task's XCom, run report)."""
    path = str(config)
    pipeline.check_setup(path, day)
    for source in SOURCES:
        pipeline.extract(path, day, source)
        pipeline.validate(path, day, source)
        pipeline.stage(path, day, source)
    linked = pipeline.link(path, day)
    report = Path(pipeline.report(path, day, {"link": linked})["report"])
    return linked, json.loads(report.read_text(encoding="utf-8")) | {"_html": report.with_suffix(".html").read_text()}


def _links(engine, day: date) -> dict[tuple[str, str], tuple[str | None, str]]:
    from tfp.warehouse import links

    with engine.connect() as conn:
        return {(r.dataset, r.record_id): (r.person_ref, r.method)
                for r in conn.execute(select(links).where(links.c.reference_date == day))}


def _decrypt(path: Path, identity) -> list[dict[str, str]]:
    import pyrage

    return list(csv.DictReader(io.StringIO(pyrage.decrypt(path.read_bytes(), [identity]).decode("utf-8"))))


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Night R1, export, decisions by the truth (half dated R1, half R2, a record's pairs together),
    encrypted import, night R2, backfill of R1. Everything the tests below look at."""
    import pyrage

    from conftest import make_keys
    from tfp.cli import main
    from tfp.warehouse import get_engine
    from tfp_dev.generate import generate

    root = tmp_path_factory.mktemp("review")
    generate(root / "inbound", families=40, seed=5, on=R1)  # 6 records fall in the band or tie
    truth = {(r["dataset"], r["record_id"]): r["person_ref"]
             for r in csv.DictReader((root / "inbound" / "truth" / "records.csv").open(encoding="utf-8"))}
    values = personal_values(root / "inbound", R1)
    shutil.rmtree(root / "inbound" / "truth")
    identity = pyrage.x25519.Identity.generate()
    (root / "reviewer.key").write_text(f"# the reviewer's age identity\n{identity}\n")
    url = f"sqlite:///{root / 'warehouse.db'}"
    # The generated borough is decisive: with the default band only one child's six attendance rows (of
    # someone on no roster) fall in it. The band reaches above the threshold here (a config may: it holds
    # those links back for review), so that five near-certain true links wait for the reviewer too.
    config = write_config(root, url, linkage={"match_probability_threshold": 0.95, "review_band": list(BAND),
                                              "review_recipient": str(identity.to_public())})
    out: dict = {"root": root, "config": config, "truth": truth, "values": values, "identity": identity}
    with pytest.MonkeyPatch.context() as mp, _Capture() as logs:
        for name, value in make_keys().items():
            mp.setenv(name, value)
        out["xcom_r1"], out["report_r1"] = _night(config, R1)
        engine = get_engine(url)
        out["engine"] = engine
        out["links_r1"] = _links(engine, R1)
        export = root / "queue_r1.csv.age"
        console = io.StringIO()
        with _stdout(console):
            assert main(["review", "export", "--config", str(config), "--date", R1.isoformat(),
                         "--out", str(export)]) == 0
        out["export"] = export
        out["rows"] = rows = _decrypt(export, identity)
        # the reviewer decides each pair from the truth; a record's pairs share a date, alternating R1 / R2
        records = sorted({(r["dataset"], r["record_id"]) for r in rows})
        dated = {rec: (ON_R1 if i % 2 == 0 else ON_R2) for i, rec in enumerate(records)}
        decisions = [[r["review_id"],
                      "link" if truth.get((r["dataset"], r["record_id"])) == r["person_ref"] else "not_a_link",
                      "reviewer one", dated[(r["dataset"], r["record_id"])]] for r in rows]
        decisions.append(["", "", "", ""])  # a row left undecided is skipped
        out["decisions"] = decisions
        plain = io.StringIO()
        writer = csv.writer(plain, lineterminator="\n")
        writer.writerow(["review_id", "decision", "reviewer", "decided_at"])
        writer.writerows(decisions)
        returned = root / "decisions.csv.age"
        returned.write_bytes(pyrage.encrypt(plain.getvalue().encode(), [identity.to_public()]))
        with _stdout(console):
            assert main(["review", "import", "--config", str(config), "--identity", str(root / "reviewer.key"),
                         str(returned)]) == 0
            out["import_again"] = main(["review", "import", "--config", str(config), "--identity",
                                        str(root / "reviewer.key"), str(returned)])
        out["xcom_r2"], out["report_r2"] = _night(config, R2)
        out["links_r2"] = _links(engine, R2)
        out["xcom_backfill"], out["report_backfill"] = _night(config, R1)
        out["links_backfill"] = _links(engine, R1)
        out["console"] = console.getvalue()
    out["logs"] = logs.text()
    yield out
    get_engine(url).dispose()


class _Capture(logging.Handler):
    """Every log record of the flow at INFO and above (a task log's level), as a log file would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> _Capture:
        root = logging.getLogger()
        self._level = root.level
        root.addHandler(self)
        root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)


def _stdout(buffer):
    from contextlib import redirect_stdout

    return redirect_stdout(buffer)


def _pairs(rows) -> dict[tuple[str, str], list[dict]]:
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((r["dataset"], r["record_id"]), []).append(r)
    return by


def test_night_one_queues_the_doubtful_records_instead_of_linking_them(flow):
    queued = {k for k, (_, m) in flow["links_r1"].items() if m == LinkMethod.QUEUED}
    assert len(queued) >= 4, "the borough should have records in the review band"
    assert all(flow["links_r1"][k][0] is None for k in queued)
    assert flow["xcom_r1"]["review_queued"] == len(queued)
    assert flow["xcom_r1"]["review_pending"] == len(flow["rows"]) and flow["xcom_r1"]["review_decided"] == 0
    assert set(_pairs(flow["rows"])) == queued  # the export holds exactly the records queued that night
    assert flow["report_r1"]["review"]["queued"] == len(queued)
    assert flow["report_r1"]["review_pending"] == len(flow["rows"])


def test_the_export_is_age_encrypted_private_and_holds_both_sides(flow):
    from tfp.review import EXPORT_HEADER

    data = flow["export"].read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert stat.S_IMODE(flow["export"].stat().st_mode) == 0o600
    assert not leak_pattern(flow["values"]).search(data)
    assert not list(flow["root"].glob(".queue_r1*"))  # no temporary plaintext left beside it
    rows = flow["rows"]
    assert list(rows[0]) == EXPORT_HEADER
    assert len({r["review_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["reason"] in {m.value for m in ReviewReason}
        assert r["record_surname"] and r["person_surname"] and r["person_family_ref"]
        assert 0.0 < float(r["match_probability"]) < 1.0
        assert r["decision"] == r["reviewer"] == r["decided_at"] == ""
    ties = [v for v in _pairs(rows).values() if v[0]["reason"] == ReviewReason.NEAR_TIE]
    assert all(len(v) == 2 for v in ties)  # a near-tie sends both candidates
    bands = [v for v in _pairs(rows).values() if v[0]["reason"] == ReviewReason.BAND]
    # (six decimals in the file: a probability just under the high end may read as it)
    assert bands and all(len(v) == 1 and BAND[0] <= float(v[0]["match_probability"]) <= BAND[1] for v in bands)
    truth = flow["truth"]
    assert any(truth.get(k) == v[0]["person_ref"] for k, v in _pairs(rows).items())  # true links among them
    assert any(truth.get(k) != v[0]["person_ref"] for k, v in _pairs(rows).items())  # and wrong ones


def test_decisions_are_recorded_with_who_and_when_and_an_import_twice_changes_nothing(flow):
    from tfp.warehouse import review_decision

    with flow["engine"].connect() as conn:
        stored = conn.execute(select(review_decision)).all()
    decided = [d for d in flow["decisions"] if d[1]]
    assert len(stored) == len(decided)
    assert {r.reviewer for r in stored} == {"reviewer one"} and all(r.imported_by for r in stored)
    assert {r.decided_on for r in stored} == {R1, R2}
    assert flow["import_again"] == 0
    assert f"0 decisions recorded, {len(decided)} recorded before, 1 rows left undecided" in flow["console"]


def test_the_next_night_follows_every_decision(flow):
    links = flow["links_r2"]
    for review_id, decision, _, _ in (d for d in flow["decisions"] if d[1]):
        row = next(r for r in flow["rows"] if r["review_id"] == review_id)
        person, method = links[(row["dataset"], row["record_id"])]
        if decision == "link":
            assert (person, method) == (row["person_ref"], LinkMethod.REVIEWED)
        else:
            assert person != row["person_ref"]
    reviewed = [k for k, (_, m) in links.items() if m == LinkMethod.REVIEWED]
    assert reviewed and all(links[k][0] == flow["truth"][k] for k in reviewed)
    assert flow["xcom_r2"]["review_decided"] == len(_pairs(flow["rows"]))
    assert flow["report_r2"]["review"]["reviewed_links"] == len(reviewed)
    # decided pairs never go back to the queue
    assert flow["xcom_r2"]["review_pending"] == 0 or all(
        k not in {(r["dataset"], r["record_id"]) for r in flow["rows"]}
        for k, (_, m) in links.items() if m == LinkMethod.QUEUED)


def test_a_backfill_applies_only_the_decisions_made_by_its_date(flow):
    """The backfill of R1 applies the decisions dated R1 and leaves the records decided on R2 queued, as
    R1's own night did; R2 applies both."""
    before, after, backfill = flow["links_r1"], flow["links_r2"], flow["links_backfill"]
    by_record = _pairs(flow["rows"])
    dates = {(r["dataset"], r["record_id"]): d[3] for d in flow["decisions"] if d[1]
             for r in flow["rows"] if r["review_id"] == d[0]}
    on_r1 = [k for k, when in dates.items() if when == ON_R1]
    on_r2 = [k for k, when in dates.items() if when == ON_R2]
    assert on_r1 and on_r2
    for record in on_r2:
        assert backfill[record] == before[record] == (None, LinkMethod.QUEUED)
    for record in on_r1:
        assert backfill[record] == after[record]
        linked = [r for r in by_record[record] if flow["truth"].get(record) == r["person_ref"]]
        if linked:
            assert backfill[record] == (linked[0]["person_ref"], LinkMethod.REVIEWED)
    # every other record links as it did on R1's own night
    assert {k: v for k, v in backfill.items() if k not in by_record} == \
        {k: v for k, v in before.items() if k not in by_record}
    assert flow["xcom_backfill"]["review_decided"] == len(on_r1)


def test_nothing_personal_in_logs_xcom_console_or_report(flow):
    pattern = leak_pattern(flow["values"])
    assert len(flow["values"]) > 200
    for name in ("xcom_r1", "xcom_r2", "xcom_backfill"):
        xcom = flow[name]
        assert all(type(v) is int for v in xcom.values()), xcom
        assert not pattern.search(json.dumps(xcom).encode())
    for name in ("report_r1", "report_r2", "report_backfill"):
        assert not pattern.search(json.dumps(flow[name]).encode())
    review_ids = {r["review_id"] for r in flow["rows"]}
    refs = {r["person_ref"] for r in flow["rows"]} | {r["record_id"] for r in flow["rows"]}
    for text in (flow["logs"], flow["console"]):
        assert not pattern.search(text.encode())
        assert not any(f"'{ref}'" in text or f" {ref} " in text for ref in refs)
        assert not any(review_id in text for review_id in review_ids)
    assert "review import: " in flow["logs"] and "review export 2025-03-31: " in flow["logs"]


# -- retention --------------------------------------------------------------------------------------

@pytest.fixture
def copy_of_flow(flow, tmp_path, keys_env):
    """The flow's borough and warehouse in a folder of their own (retention deletes from it)."""
    root = tmp_path / "copy"
    shutil.copytree(flow["root"], root)
    url = f"sqlite:///{root / 'warehouse.db'}"
    config = write_config(root, url, linkage={"match_probability_threshold": 0.95})
    from tfp.config import load_config
    from tfp.warehouse import get_engine

    yield load_config(config), get_engine(url), root
    get_engine(url).dispose()


def _review_tables(engine) -> dict[str, list[tuple]]:
    from tfp.warehouse import review_decision, review_night, review_queue

    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t))] for t in (review_queue, review_night, review_decision)}


def test_a_withdrawal_deletes_the_queue_and_decisions_naming_the_person(flow, copy_of_flow):
    from helpers import write_feed
    from tfp.feeds import DATASETS
    from tfp.retention import run_category
    from tfp.warehouse import review_decision, review_queue

    config, engine, root = copy_of_flow
    tables = _review_tables(engine)
    people = [r["person_ref"] for r in flow["rows"]]
    person = min(people, key=people.count)  # the others' pairs stay
    pairs = {p[0] for p in tables["review_queue"] if p[3] == person}
    assert pairs
    write_feed(root, "children_services", f"consent_{R2:%Y%m%d}.csv", list(DATASETS["consent"].columns),
               [["CW1", person, "tfp_evaluation", "withdrawn", "2025-04-01T08:00:00"]])
    path = str(root / "tfp.yaml")
    pipeline.extract(path, R2, "children_services")
    pipeline.validate(path, R2, "children_services")
    pipeline.stage(path, R2, "children_services")
    outcome = run_category(engine, config, "withdrawn", R2, dry_run=False)
    assert outcome.deleted >= len(pairs)
    with engine.connect() as conn:
        assert not conn.execute(select(review_queue).where(review_queue.c.person_ref == person)).all()
        assert not conn.execute(select(review_decision).where(review_decision.c.review_id.in_(pairs))).all()
        left = conn.execute(select(func.count()).select_from(review_queue)).scalar_one()
    assert 0 < left < len(tables["review_queue"])  # the others' pairs stay


def test_age_out_and_programme_end_delete_the_queue_and_decisions(flow, copy_of_flow):
    """A staging age-out takes the pairs of every record it deletes (open spells stay, and their pairs);
    a dry run counts them and deletes nothing; the programme-end purge empties the three tables."""
    from tfp.feeds import PARTNER_DATASETS
    from tfp.retention import run_category
    from tfp.warehouse import staging

    config, engine, _ = copy_of_flow
    before = _review_tables(engine)
    late = R1 + timedelta(days=31 * (config.retention.staging_months + 30))
    dry = run_category(engine, config, "staging", late, dry_run=True)
    assert _review_tables(engine) == before
    outcome = run_category(engine, config, "staging", late, dry_run=False)
    assert outcome.deleted == dry.found
    after = _review_tables(engine)
    assert len(after["review_queue"]) < len(before["review_queue"])
    with engine.connect() as conn:
        staged = {(d, r) for d in PARTNER_DATASETS for r in conn.execute(select(staging[d].c.record_id)).scalars()}
    assert all((d, r) in staged for _, d, r, _, _ in after["review_queue"])  # every pair left has its record
    kept = {p[0] for p in after["review_queue"]}
    assert all(n[1] in kept for n in after["review_night"]) and all(d[0] in kept for d in after["review_decision"])
    assert len(after["review_decision"]) < len(before["review_decision"])
    run_category(engine, config, "programme_end", config.retention.delete_all_after, dry_run=False)
    assert _review_tables(engine) == {"review_queue": [], "review_night": [], "review_decision": []}


# -- the pieces ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("p1", "p2", "band", "reason"), [
    (0.85, None, (0.80, 0.95), ReviewReason.BAND),
    (0.80, 0.01, (0.80, 0.95), ReviewReason.BAND),  # the band's low end is in it
    (0.95, 0.01, (0.80, 0.95), None),  # its high end is not: linked
    (0.79, 0.05, (0.80, 0.95), None),  # below the band, no tie: unlinked, nobody asked
    (0.45, 0.44, (0.80, 0.95), ReviewReason.NEAR_TIE),  # twins: together 0.89
    (0.60, 0.30, (0.80, 0.95), ReviewReason.NEAR_TIE),  # within one bit (ratio 0.5), together 0.90
    (0.60, 0.25, (0.80, 0.95), None),  # more than one bit apart, the best below the band
    (0.30, 0.29, (0.80, 0.95), None),  # a tie, but together short of the band: probably neither
    (0.97, 0.01, (0.80, 0.99), ReviewReason.BAND),  # a band above the threshold withholds the link
    (0.85, None, (0.90, 0.90), None),  # an empty band sends nothing
    (0.85, None, None, None),
])
def test_which_records_go_to_review(p1, p2, band, reason):
    from tfp.link import review_reason

    assert review_reason(p1, p2, band, 0.5) == reason


def _people() -> pd.DataFrame:
    rows = [("T1", "Amara", "Okoye", "2010-05-01", "F", "E17 4AB"),
            ("T2", "Amira", "Okoye", "2010-05-01", "F", "E17 4AB"),
            ("P3", "Gareth", "Llewellyn", "1975-11-30", "M", "CF10 1AA")]
    frame = pd.DataFrame(rows, columns=["person_ref", "forename", "surname", "date_of_birth", "sex", "postcode"])
    frame["nino"], frame["upn"] = None, None
    return frame


def _record(record_id: str, forename: str | None, surname: str, dob: str, sex: str, postcode: str) -> dict:
    return {"record_id": record_id, "forename": forename, "surname": surname, "date_of_birth": dob, "sex": sex,
            "postcode": postcode, "nino": None, "upn": None}


def test_link_records_queues_a_near_tie_and_follows_decisions():
    """Twins and a record without a forename: a near-tie, queued with both candidates. A not_a_link for
    one twin gives the other the whole probability; a link decision links whatever the model says."""
    from tfp.link import link_records

    roster = _people()
    records = pd.DataFrame([_record("R1", None, "Okoye", "2010-05-01", "F", "E17 4AB"),
                            _record("R2", "Gareth", "Llewellyn", "1975-11-30", "M", "CF10 1AA")])
    band = (0.80, 0.95)
    plain = link_records(roster, records, review_band=band).set_index("record_id")
    assert plain.loc["R1", "method"] == LinkMethod.QUEUED and plain.loc["R1", "person_ref"] is None
    assert plain.loc["R1", "review_reason"] == ReviewReason.NEAR_TIE
    assert {plain.loc["R1", "best_ref"], plain.loc["R1", "runner_up_ref"]} == {"T1", "T2"}
    assert plain.loc["R2", "method"] == LinkMethod.PROBABILISTIC and plain.loc["R2", "review_reason"] is None
    without_band = link_records(roster, records).set_index("record_id")
    assert without_band.loc["R1", "method"] == LinkMethod.UNLINKED

    rejected = link_records(roster, records, review_band=band, rejected={("R1", "T2")}).set_index("record_id")
    assert rejected.loc["R1", "runner_up_ref"] is None and rejected.loc["R1", "best_ref"] == "T1"
    assert rejected.loc["R1", "match_probability"] > plain.loc["R1", "match_probability"]

    decided = link_records(roster, records, review_band=band, decided={"R1": "T2", "R2": "T1"}).set_index("record_id")
    assert (decided.loc["R1", "person_ref"], decided.loc["R1", "method"]) == ("T2", LinkMethod.REVIEWED)
    assert (decided.loc["R2", "person_ref"], decided.loc["R2", "method"]) == ("T1", LinkMethod.REVIEWED)
    assert decided.loc["R2", "match_probability"] is None  # T1 is no candidate of R2's
    gone = link_records(roster, records, review_band=band, decided={"R1": "NOT-ON-ROSTER"}).set_index("record_id")
    assert gone.loc["R1", "method"] == LinkMethod.QUEUED


# -- import refused -----------------------------------------------------------------------------------

@pytest.fixture
def queued(warehouse_url):
    """A warehouse (SQLite and PostgreSQL) with two queued pairs of one record (first queued on R1) and one
    of another."""
    from tfp.review import record_queue
    from tfp.warehouse import connect, upgrade

    upgrade(warehouse_url)
    engine = connect(warehouse_url)
    with engine.begin() as conn:
        record_queue(conn, R1, [("incidents", "I1", "P1", ReviewReason.NEAR_TIE, 0.45),
                                ("incidents", "I1", "P2", ReviewReason.NEAR_TIE, 0.44),
                                ("benefits", "B1", "P3", ReviewReason.BAND, 0.85)])
        from tfp.warehouse import review_queue

        ids = {(r.record_id, r.person_ref): r.review_id for r in conn.execute(select(review_queue))}
    return engine, ids


def _decisions_file(tmp_path: Path, rows: list[list[str]], header=("review_id", "decision", "reviewer",
                                                                   "decided_at")) -> Path:
    path = tmp_path / "decisions.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


NOW = datetime(2025, 4, 2, 12, tzinfo=UTC)


@pytest.mark.parametrize(("rows", "message"), [
    ([["rv-unknown", "link", "a", "2025-04-01T10:00:00Z"]], "review_id is not in the review queue (rows 3)"),
    ([["{I1P1}", "yes", "a", "2025-04-01T10:00:00Z"]], "decision is not link or not_a_link (rows 3)"),
    ([["{I1P1}", "link", "", "2025-04-01T10:00:00Z"]], "reviewer is empty or longer than 100 characters (rows 3)"),
    ([["{I1P1}", "link", "a", "2025-04-01 10:00"]], "with a UTC offset (rows 3)"),
    ([["{I1P1}", "link", "a", "2025-04-03T10:00:00Z"]], "decided_at is in the future (rows 3)"),
    ([["{I1P1}", "link", "a", "2025-03-30T10:00:00Z"]], "before the pair was first queued (rows 3)"),
    ([["{I1P1}", "link", "a", "2025-04-01T10:00:00Z"], ["{I1P1}", "link", "a", "2025-04-01T11:00:00Z"]],
     "review_id appears more than once (rows 4)"),
    ([["{I1P1}", "link", "a", "2025-04-01T10:00:00Z"], ["{I1P2}", "link", "a", "2025-04-01T10:00:00Z"]],
     "link for more than one person of one record (rows 3, 4)"),
])
def test_an_import_with_a_bad_row_records_nothing(queued, tmp_path, rows, message):
    """Row 2 is a good decision; the bad rows after it stop the whole file, named by row number."""
    from tfp.review import ReviewError, import_decisions
    from tfp.warehouse import review_decision

    engine, ids = queued
    names = {"{I1P1}": ids[("I1", "P1")], "{I1P2}": ids[("I1", "P2")]}
    good = [ids[("B1", "P3")], "not_a_link", "a", "2025-04-01T10:00:00Z"]
    path = _decisions_file(tmp_path, [good] + [[names.get(r[0], r[0]), *r[1:]] for r in rows])
    with pytest.raises(ReviewError, match="nothing imported") as caught:
        import_decisions(engine, path, clock=lambda: NOW)
    assert message in str(caught.value)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(review_decision)).scalar_one() == 0


def test_an_import_needs_the_four_columns_and_an_identity_for_an_age_file(queued, tmp_path):
    import pyrage

    from tfp.review import ReviewError, import_decisions

    engine, ids = queued
    path = _decisions_file(tmp_path, [[ids[("B1", "P3")], "link", "a"]], header=("review_id", "decision", "reviewer"))
    with pytest.raises(ReviewError, match="has no column decided_at"):
        import_decisions(engine, path, clock=lambda: NOW)
    secret = tmp_path / "decisions.csv.age"
    identity, other = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    secret.write_bytes(pyrage.encrypt(b"review_id,decision,reviewer,decided_at\n", [identity.to_public()]))
    with pytest.raises(ReviewError, match="give --identity"):
        import_decisions(engine, secret, clock=lambda: NOW)
    (tmp_path / "other.key").write_text(f"{other}\n")
    with pytest.raises(ReviewError, match="cannot be decrypted with that age identity"):
        import_decisions(engine, secret, tmp_path / "other.key", clock=lambda: NOW)


def test_a_plaintext_import_and_a_later_correction_as_of_their_dates(queued, tmp_path):
    """A plain CSV import works too (the reviewer's own decrypted file, exported columns ignored). A pair
    decided twice keeps both: each night applies the latest decision made by its date."""
    from tfp.review import decisions_as_of, import_decisions

    engine, ids = queued
    first = _decisions_file(tmp_path, [[ids[("B1", "P3")], "link", "a", "2025-04-01T10:00:00+01:00"]])
    assert import_decisions(engine, first, clock=lambda: NOW).recorded == 1
    second = _decisions_file(tmp_path, [[ids[("B1", "P3")], "not_a_link", "b", "2025-04-02T09:00:00+01:00"]])
    assert import_decisions(engine, second, clock=lambda: NOW).recorded == 1
    with engine.connect() as conn:
        assert decisions_as_of(conn, R1).records() == set()
        on_r2 = decisions_as_of(conn, R2)
        assert on_r2.linked == {("benefits", "B1"): "P3"} and not on_r2.rejected
        later = decisions_as_of(conn, date(2025, 4, 2))
        assert later.linked == {} and later.rejected == {("benefits", "B1", "P3")}


def test_export_without_a_recipient_or_a_night_is_refused(queued, tmp_path):
    from tfp.review import ReviewError, export_queue

    engine, _ = queued
    with pytest.raises(ReviewError, match="no reviewer to encrypt the queue to"):
        export_queue(engine, R1, tmp_path / "q.age", None)
    with pytest.raises(ReviewError, match="not an age public key"):
        export_queue(engine, R1, tmp_path / "q.age", "age1notakey")
    import pyrage

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    with pytest.raises(ReviewError, match="no night has linked records for 2025-03-31"):
        export_queue(engine, R1, tmp_path / "q.age", recipient)
    assert not (tmp_path / "q.age").exists()


# -- config ------------------------------------------------------------------------------------------

def test_the_review_keys_are_optional_and_checked(tmp_path):
    from helpers import make_config
    from tfp.config import ConfigError, load_config

    url = f"sqlite:///{tmp_path / 'w.db'}"
    linkage = make_config(tmp_path, url).linkage  # a config without the new keys
    assert (linkage.review_band, linkage.review_tie_ratio, linkage.review_recipient) == ((0.80, 0.95), 0.5, None)
    for bad, key in (({"review_band": [0.95, 0.80]}, "review_band"), ({"review_band": [0, 0.9]}, "review_band"),
                     ({"review_recipient": "ssh-ed25519 AAAA"}, "review_recipient"),
                     ({"review_tie_ratio": 0}, "review_tie_ratio")):
        with pytest.raises(ConfigError, match=f"linkage.*{key}|{key}"):
            load_config(write_config(tmp_path, url, linkage={"match_probability_threshold": 0.95, **bad}))


# -- the UI: the dashboard's nights table ---------------------------------------------------------------

def test_the_dashboard_shows_the_review_counts_of_each_night(flow, tmp_path):
    """The operations dashboard (Browse › tfp reports) reads the run reports the flow wrote: each night's
    queued / decided / pending, counts only."""
    from tfp.dashboard import assemble, load_nights, render

    reports = flow["root"] / "work" / "reports"
    data = assemble(load_nights(reports))
    night = next(n for n in data["nights"] if n["date"] == R2.isoformat())
    assert (night["review_queued"], night["review_decided"], night["review_pending"]) == (
        flow["xcom_r2"]["review_queued"], flow["xcom_r2"]["review_decided"], flow["xcom_r2"]["review_pending"])
    backfill = next(n for n in data["nights"] if n["date"] == R1.isoformat())
    assert backfill["review_decided"] == flow["xcom_backfill"]["review_decided"] > 0
    page = render(data)
    assert "review: queued / decided / pending" in page
    assert (f"<td>{night['review_queued']} / {night['review_decided']} / {night['review_pending']}</td>") in page
    assert not leak_pattern(flow["values"]).search(page.encode())
