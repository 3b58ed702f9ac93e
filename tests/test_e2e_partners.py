"""A night with several partners per source (issue 17 item 1), for real: the same generated borough, with the
optional health and support_services sources, run once with one partner per source (today's config form) and
once with housing split among three registered providers (two drop folders, one over SFTP) and probation among
the NPS and a CRC. The split night runs a chain per partner in the DAG, links the records of every partner,
matches the generator's truth (the health flag from the health feed included), and delivers exactly the bytes
of the single-partner night."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from hardening_helpers import R, files_bytes, run_env, tfp_run
from sqlalchemy import select

from conftest import make_keys
from helpers import write_config
from tfp.warehouse import FLAGS, connect, family_flags, links
from tfp_dev.generate import generate
from tfp_dev.sftpserver import SftpServer

pytestmark = pytest.mark.slow

SPLIT = {"housing": ("clarion", "peabody", "hyde"), "probation": ("nps", "crc")}
FAMILIES, SEED = 120, 17


OPTIONAL = {"health": {"transport": "directory", "path": "inbound/health"},
            "support_services": {"transport": "directory", "path": "inbound/support_services"}}


def _borough(folder: Path, partners=None) -> Path:
    generate(folder / "gen", families=FAMILIES, seed=SEED, on=R, partners=partners, health=True, support=True)
    shutil.move(folder / "gen" / "truth", folder / "truth")
    (folder / "gen").rename(folder / "inbound")
    return folder


def _csvs(folder: Path) -> dict[str, bytes]:
    return {name: data for name, data in files_bytes(folder).items() if name.endswith(".csv")}


def _flags(url: str) -> dict[str, tuple[int, ...]]:
    with connect(url).connect() as conn:
        rows = conn.execute(select(family_flags).where(family_flags.c.reference_date == R,
                                                       family_flags.c.scope == "all")).all()
    return {r.family_ref: tuple(getattr(r, f) for f in FLAGS) for r in rows}


def test_a_night_with_several_partners_per_source_delivers_the_single_partner_nights_bytes(tmp_path):
    keys = make_keys()  # one installation: the same keys, so the same tokens
    single = _borough(tmp_path / "single")
    write_config(single, "sqlite:///work/warehouse.db", sources=OPTIONAL)
    one = tfp_run(single / "tfp.yaml", run_env(single, keys))
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert "housing.extract: success" in one.stdout  # the short form keeps today's task ids

    split = _borough(tmp_path / "split", partners=SPLIT)
    assert not list((split / "inbound" / "housing").glob("*.csv"))
    (split / "inbound" / "housing" / "feedback").mkdir()
    with SftpServer(split / "inbound" / "housing", password="h-secret") as hyde:
        write_config(split, "sqlite:///work/warehouse.db", sources={
            "housing": {"partners": [
                {"id": "clarion", "transport": "directory", "path": "inbound/housing/clarion",
                 "outbound": "outbound/clarion", "cadence": "monthly", "contact": "data@clarion.example"},
                {"id": "peabody", "transport": "directory", "path": "inbound/housing/peabody"},
                {"id": "hyde", "transport": "sftp", "conn_id": "sftp_hyde", "path": "/hyde",
                 "outbound": "/feedback", "remove_after_pickup": True}]},
            "probation": {"partners": [
                {"id": "nps", "transport": "directory", "path": "inbound/probation/nps"},
                {"id": "crc", "transport": "directory", "path": "inbound/probation/crc"}]},
            **OPTIONAL})
        connection = json.dumps({"conn_type": "sftp", "host": hyde.host, "port": hyde.port, "login": "tfp",
                                 "password": "h-secret",
                                 "extra": {"host_key": hyde.host_key, "no_host_key_check": False}})
        many = tfp_run(split / "tfp.yaml", run_env(split, keys, AIRFLOW_CONN_SFTP_HYDE=connection))
    assert many.returncode == 0, many.stdout[-3000:] + many.stderr[-3000:]
    for source, partners in SPLIT.items():  # a chain per partner, grouped under its source
        for partner in partners:
            for step in ("extract", "validate", "stage"):
                assert f"{source}.{partner}.{step}: success" in many.stdout, many.stdout
    assert "police.extract: success" in many.stdout and "feedback: success" in many.stdout
    for source in ("health", "support_services"):  # the optional sources ran in both nights
        assert f"{source}.stage: success" in one.stdout and f"{source}.stage: success" in many.stdout
    assert "feedback:" not in one.stdout  # no partner has an outbound path: no feedback task
    # each partner with an outbound path got its feedback over its own transport; peabody has none
    day = R.strftime("%Y%m%d")
    for folder, partner in ((split / "outbound" / "clarion", "clarion"),
                            (split / "inbound" / "housing" / "feedback", "hyde")):
        assert sorted(p.name for p in folder.iterdir()) == [f"tfp_feedback_{partner}_{day}.csv",
                                                            f"tfp_feedback_{partner}_{day}.txt"]
        with (folder / f"tfp_feedback_{partner}_{day}.csv").open(encoding="utf-8") as handle:
            fed = list(csv.DictReader(handle))
        assert fed[0] == {"file": f"tenancy_events_{day}.csv", "record_id": "", "status": "landed", "rules": ""}
        assert "link rate" in (folder / f"tfp_feedback_{partner}_{day}.txt").read_text()
    assert not list((split / "inbound" / "housing" / "hyde").glob("*.csv"))  # picked up over SFTP and removed

    # the same delivery, byte for byte, and the generator's truth
    assert _csvs(split / "delivered") == _csvs(single / "delivered") and len(_csvs(single / "delivered")) >= 4
    with (split / "truth" / "families.csv").open(encoding="utf-8") as handle:
        truth = {r["family_ref"]: tuple(int(r[f]) for f in FLAGS) for r in csv.DictReader(handle)}
    assert _flags(f"sqlite:///{split / 'work' / 'warehouse.db'}") == truth
    # the health flag rests on the health feed for some family (else the comparison would not test it)
    with connect(f"sqlite:///{split / 'work' / 'warehouse.db'}").connect() as conn:
        health_links = conn.execute(select(links.c.record_id).where(
            links.c.reference_date == R, links.c.dataset.in_(("treatment_episodes", "mental_health_contacts")),
            links.c.person_ref.is_not(None))).all()
    assert health_links and sum(f[FLAGS.index("health")] for f in truth.values()) > 0

    # every partner's records link, each under its own key; the truth names them the same way
    with connect(f"sqlite:///{split / 'work' / 'warehouse.db'}").connect() as conn:
        linked = conn.execute(select(links.c.dataset, links.c.record_id, links.c.person_ref)
                              .where(links.c.reference_date == R, links.c.person_ref.is_not(None))).all()
    for source, partners in SPLIT.items():
        dataset = {"housing": "tenancy_events", "probation": "cases"}[source]
        for partner in partners:
            assert any(r.dataset == dataset and r.record_id.startswith(f"{partner}:") for r in linked), partner
    with (split / "truth" / "records.csv").open(encoding="utf-8") as handle:
        true_person = {(r["dataset"], r["record_id"]): r["person_ref"] for r in csv.DictReader(handle)
                       if r["valid"] == "Y"}
    wrong = [r for r in linked if r.dataset in ("tenancy_events", "cases")
             and true_person.get((r.dataset, r.record_id)) not in (None, r.person_ref)]
    assert len(wrong) <= 0.02 * len(linked)
