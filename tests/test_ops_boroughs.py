"""Issue 14 item 6: many boroughs, one deployment.

- Each borough has its own key variables, warehouse and work_dir, and a night refuses to run when its file
  shares any of them with another borough's (or with ``TFP_CONFIG``'s); a borough whose own keys are not
  set never runs on another borough's.
- Through the real scheduler, two boroughs' nights run at once, each delivering exactly what its own
  ``tfp run`` delivers; one borough's key cannot sign, or open the landing copies of, the other's files; the
  same people get different tokens in each; each borough's warning alert goes through its own Connection,
  and the flags are task warnings in the log the UI shows (item 4).
- ``TFP_CELERY_QUEUE`` and Airflow's cluster policy put each borough's (and each source's) tasks on a queue
  of their own, so CeleryExecutor workers can be given boroughs and sources.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import make_keys
from helpers import write_config
from tfp import deployment
from tfp.config import ConfigError, example_settings, load_config, load_keys
from tfp.feeds import OPTIONAL_SOURCES

REPO = Path(__file__).resolve().parents[1]
A, B = "E09000031", "E09000032"


def own_keys(la_code: str) -> tuple[dict[str, str], dict[str, str]]:
    """A borough's ``keys`` section naming variables of its own, and fresh values for them."""
    values = make_keys()
    names = {f"{kind}_key_env": f"TFP_{la_code}_{kind.upper()}_KEY" for kind in ("pseudonym", "linkage", "signing")}
    env = {names[f"{kind}_key_env"]: values[f"TFP_{kind.upper()}_KEY"] for kind in ("pseudonym", "linkage", "signing")}
    return names, env


def _borough(root: Path, la_code: str, warehouse_url: str | None = None, **overrides) -> Path:
    return write_config(root, warehouse_url or f"sqlite:///{root / 'warehouse.db'}",
                        local_authority={"code": la_code, "name": f"Borough {la_code}"}, **overrides)


def _link(folder: Path, la_code: str, config: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{la_code}.yaml").symlink_to(config)


# -- nothing crosses: fast ---------------------------------------------------------------------------

def test_a_borough_sharing_keys_warehouse_or_work_dir_with_another_is_refused(tmp_path, monkeypatch):
    keys_a, _ = own_keys(A)
    keys_b, _ = own_keys(B)
    first = _borough(tmp_path / "a", A, keys=keys_a)
    second = _borough(tmp_path / "b", B, keys=keys_b)
    _link(tmp_path / "boroughs", A, first)
    _link(tmp_path / "boroughs", B, second)
    monkeypatch.setenv("TFP_BOROUGHS_DIR", str(tmp_path / "boroughs"))
    monkeypatch.delenv("TFP_CONFIG", raising=False)
    for config in (first, second):
        deployment.check_isolation(str(config))  # their own of everything: fine

    # B takes A's signing key variable, then A's warehouse, then A's work_dir: refused each time, naming it
    for override, shared in (({"keys": {**keys_b, "signing_key_env": keys_a["signing_key_env"]}}, "keys"),
                             ({"warehouse_url": f"sqlite:///{tmp_path / 'a' / 'warehouse.db'}"}, "warehouse_url"),
                             ({"work_dir": str(tmp_path / "a" / "work")}, "work_dir")):
        second.unlink()
        _borough(tmp_path / "b", B, **{"keys": keys_b, **override})
        with pytest.raises(ConfigError, match=rf"tfp.yaml shares {shared} with tfp.yaml \({A}\)") as refused:
            deployment.check_isolation(str(second))
        assert "TFP_E09000031" not in str(refused.value)  # what is shared, never the names' values
        with pytest.raises(ConfigError, match=f"shares {shared}"):
            deployment.check_isolation(str(first))  # and A's night says so too
    # the deployment's own config (TFP_CONFIG) counts as one more borough
    second.unlink()
    _borough(tmp_path / "b", B, keys=keys_b)
    deployment.check_isolation(str(second))
    legacy = write_config(tmp_path / "legacy", f"sqlite:///{tmp_path / 'legacy.db'}")  # the default key names
    monkeypatch.setenv("TFP_CONFIG", str(legacy))
    deployment.check_isolation(str(second))
    monkeypatch.setenv("TFP_CONFIG", str(first))  # the same file as a borough: itself, not another
    deployment.check_isolation(str(first))
    # a config outside the deployment (tfp run of some other file) is not compared
    deployment.check_isolation(str(write_config(tmp_path / "elsewhere", f"sqlite:///{tmp_path / 'a' / 'warehouse.db'}",
                                                keys=keys_a)))


def test_a_borough_without_its_own_keys_never_runs_on_another_boroughs(tmp_path, monkeypatch):
    keys_a, env_a = own_keys(A)
    keys_b, env_b = own_keys(B)
    for name, value in env_a.items():
        monkeypatch.setenv(name, value)
    for name in env_b:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_" + keys_b["pseudonym_key_env"], raising=False)
    second = load_config(_borough(tmp_path / "b", B, keys=keys_b))
    with pytest.raises(ConfigError, match=f"set the environment variable or Airflow Variable {keys_b['pseudonym_key_env']}"):
        load_keys(second)
    assert load_keys(load_config(_borough(tmp_path / "a", A, keys=keys_a))).pseudonym == bytes.fromhex(
        env_a[keys_a["pseudonym_key_env"]])


def test_tfp_airflow_registers_every_boroughs_key_variables_as_sensitive(tmp_path, monkeypatch):
    keys_a, _ = own_keys(A)
    keys_b, _ = own_keys(B)
    _link(tmp_path / "boroughs", A, _borough(tmp_path / "a", A, keys=keys_a))
    _link(tmp_path / "boroughs", B, _borough(tmp_path / "b", B, keys=keys_b, warehouse_password_env="TFP_B_DB"))
    monkeypatch.setenv("TFP_BOROUGHS_DIR", str(tmp_path / "boroughs"))
    assert deployment.borough_secret_names() == [*keys_a.values(), *keys_b.values(), "TFP_B_DB"]


def test_the_checkouts_config_boroughs_folder_is_used_when_tfp_boroughs_dir_is_not_set(tmp_path, monkeypatch):
    checkout = tmp_path / "config" / "boroughs"
    monkeypatch.setattr(deployment, "DEFAULT_BOROUGHS", checkout)
    monkeypatch.delenv("TFP_BOROUGHS_DIR", raising=False)
    assert deployment.boroughs() == {}  # no such folder: one borough, TFP_CONFIG's
    checkout.mkdir(parents=True)
    own = _borough(tmp_path / "b", B)
    _link(checkout, B, own)
    assert deployment.boroughs() == {B: str(own)}
    elsewhere = tmp_path / "named"
    _link(elsewhere, A, _borough(tmp_path / "a", A))
    monkeypatch.setenv("TFP_BOROUGHS_DIR", str(elsewhere))  # the variable, when set, names the folder
    assert list(deployment.boroughs()) == [A]


# -- Celery queues: fast -----------------------------------------------------------------------------

QUEUES = r"""
import json
from airflow.dag_processing.dagbag import DagBag

bag = DagBag()
print("ERRORS", json.dumps(sorted(bag.import_errors.values())))
print("QUEUES", json.dumps({d: {t.task_id: t.queue for t in dag.tasks} for d, dag in bag.dags.items()}))
"""


def _parsed_queues(tmp_path: Path, template: str | None) -> tuple[list[str], dict]:
    """Parse the DAG files as the dag-processor does, with config/airflow_local_settings.py on Airflow's path."""
    home = tmp_path / f"home-{abs(hash(template))}"
    (home / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "airflow_local_settings.py", home / "config" / "airflow_local_settings.py")
    (tmp_path / "boroughs").mkdir(exist_ok=True)
    raw = example_settings(local_authority={"code": B, "name": "Borough B"})
    (tmp_path / "boroughs" / "b.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "TFP_CELERY"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "TFP_BOROUGHS_DIR": str(tmp_path / "boroughs"),
                **({"TFP_CELERY_QUEUE": template} if template is not None else {})})
    done = subprocess.run([sys.executable, "-c", QUEUES], env=env, capture_output=True, text=True, timeout=300)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("ERRORS", "QUEUES")))
    assert "QUEUES" in lines, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(lines["ERRORS"]), json.loads(lines["QUEUES"])


def test_tfp_celery_queue_spreads_boroughs_and_sources_over_queues(tmp_path):
    errors, queues = _parsed_queues(tmp_path, "tfp_{la_code}_{source}")
    assert errors == []
    borough = queues[f"tfp_nightly__{B}"]
    assert borough["police.extract"] == borough["police.validate"] == f"tfp_{B}_police"
    assert borough["dwp.stage"] == f"tfp_{B}_dwp"
    assert {borough[t] for t in ("check_setup", "check_inputs", "link", "package", "deliver", "report")} == {
        f"tfp_{B}_main"}
    assert set(queues[f"tfp_retention__{B}"].values()) == {f"tfp_{B}_main"}
    assert queues["tfp_nightly"]["schools.extract"] == "tfp_main_schools"
    assert queues["tfp_nightly"]["report"] == "tfp_main_main"



def test_the_queue_policy_without_tfp_celery_queue_changes_nothing_and_refuses_an_unknown_placeholder(monkeypatch):
    """The rest of the policy without parsing the DAG files again (the parse above is the slow part)."""
    from types import SimpleNamespace

    from tfp_airflow.queues import queue_for, task_policy

    assert queue_for(f"tfp_nightly__{B}", "police.extract", "tfp_{la_code}") == f"tfp_{B}"  # one queue per borough
    # the optional support_services source has a queue of its own like the six
    assert queue_for(f"tfp_nightly__{B}", "support_services.stage", "tfp_{la_code}_{source}") == \
        f"tfp_{B}_support_services"
    assert queue_for("other_dag", "police.extract", "tfp_{la_code}") is None  # not tfp's: left alone
    task = SimpleNamespace(dag_id=f"tfp_nightly__{B}", task_id="link", queue="default")
    monkeypatch.delenv("TFP_CELERY_QUEUE", raising=False)
    task_policy(task)
    assert task.queue == "default"  # unset: Airflow's default queue, as before
    monkeypatch.setenv("TFP_CELERY_QUEUE", "tfp_{la_code}_{source}")
    task_policy(task)
    assert task.queue == f"tfp_{B}_main"
    for bad in ("tfp_{borough}", "tfp {la_code}", "tfp_{la_code}/x"):
        with pytest.raises(ConfigError, match="TFP_CELERY_QUEUE"):
            queue_for(f"tfp_nightly__{B}", "link", bad)


# -- two boroughs at once through the scheduler: slow -------------------------------------------------

def _signing_public(private_b64: str, path: Path) -> Path:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_b64)).public_key()
    path.write_text(base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode())
    return path


def _landing_copies(root: Path) -> dict[int, Path]:
    from tfp.landing import COPY

    return {int(COPY.match(p.name)["id"]): p for p in (root / "work" / "landing").rglob("*.raw.bin")}


def _landing_keys(root: Path) -> dict[int, bytes]:
    from sqlalchemy import select

    from tfp.warehouse import connect, landing_key

    with connect(f"sqlite:///{root / 'work' / 'warehouse.db'}").connect() as conn:
        return {row.landing_id: row.key for row in conn.execute(select(landing_key))}


def _outcome_order(stdout: str) -> list[str]:
    """The task ids of `tfp run`'s outcome list, as printed."""
    lines = stdout.splitlines()
    start = lines.index("tfp_nightly tasks:") + 1
    return [line.strip().split(":")[0] for line in lines[start:] if line.startswith("  ") and ": " in line]


def _tokens(root: Path, la_code: str) -> set[str]:
    import csv

    with (root / "delivered" / f"tfp_submission_{la_code}_20250331.csv").open(encoding="utf-8-sig", newline="") as f:
        return {row["person_token"] for row in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.airflow_stack
def test_two_boroughs_at_once_under_the_scheduler_each_as_its_tfp_run_and_nothing_crosses(tmp_path):
    from datetime import datetime, timedelta

    from hardening_helpers import R, files_bytes, make_borough, night_root, run_env, tfp_run
    from smtp_helpers import smtp_server, text_of

    from ops_helpers import TFP, airflow_stack
    from tfp.errors import LandingTampered
    from tfp.landing import decrypt_from

    feeds = make_borough(tmp_path / "feeds", families=20)  # the same people in both: only the keys differ
    stale = R - timedelta(days=11)  # B's police stopped sending incidents (max age 8): warn, deliver, alert
    keys, env = {}, {}

    def borough(root: Path, la_code: str) -> Path:
        config = night_root(root, feeds, local_authority={"code": la_code, "name": f"Borough {la_code}"},
                            keys=keys[la_code], freshness={"on_overdue": "warn"})
        if la_code == B:
            police = root / "inbound" / "police"
            shutil.move(police / f"incidents_{R:%Y%m%d}.csv", police / f"incidents_{stale:%Y%m%d}.csv")
        return config

    for la_code in (A, B):
        keys[la_code], own_env = own_keys(la_code)
        env.update(own_env)
        _link(tmp_path / "boroughs", la_code, borough(tmp_path / la_code, la_code))

    with smtp_server() as inbox_a, smtp_server() as inbox_b, smtp_server() as shared:
        alerts = {f"AIRFLOW_CONN_TFP_ALERTS__{A}": inbox_a.connection("oncall@a.example"),
                  f"AIRFLOW_CONN_TFP_ALERTS__{B}": inbox_b.connection("oncall@b.example"),
                  "AIRFLOW_CONN_TFP_ALERTS": shared.connection("oncall@shared.example")}
        with airflow_stack(tmp_path, {"TFP_BOROUGHS_DIR": str(tmp_path / "boroughs"), **env, **alerts}) as stack:
            admin = stack.token("admin")
            runs = {}
            for la_code in (A, B):
                dag_id = f"tfp_nightly__{la_code}"
                stack.wait_for_dag(dag_id, admin)
                stack.api("PATCH", f"/dags/{dag_id}", admin, {"is_paused": False})
            for la_code in (A, B):
                dag_id = f"tfp_nightly__{la_code}"
                runs[la_code] = stack.api("POST", f"/dags/{dag_id}/dagRuns", admin,
                                          {"logical_date": f"{R.isoformat()}T00:00:00+00:00"})["dag_run_id"]
            spans = {}
            for la_code in (A, B):
                dag_id = f"tfp_nightly__{la_code}"
                stack.wait_for_runs(dag_id, admin, 1, timeout=1200)
                tis = stack.api("GET", f"/dags/{dag_id}/dagRuns/{runs[la_code]}/taskInstances?limit=100",
                                admin)["task_instances"]
                # every task succeeded but those of the optional sources the configs leave out: skipped
                optional = [t for t in tis if t["task_id"].split(".")[0] in OPTIONAL_SOURCES]
                ran = [t for t in tis if t not in optional]
                assert optional and {t["state"] for t in optional} == {"skipped"}, optional
                assert {t["state"] for t in ran} == {"success"}, [(t["task_id"], t["state"]) for t in ran]
                spans[la_code] = (min(datetime.fromisoformat(t["start_date"]) for t in ran),
                                  max(datetime.fromisoformat(t["end_date"]) for t in ran))
            # item 4: the flags are warnings in check_inputs' log, as the UI shows it (its REST API)
            status, body = stack.request(
                "GET", f"/api/v2/dags/tfp_nightly__{B}/dagRuns/{runs[B]}/taskInstances/check_inputs/logs/1"
                       "?full_content=true", token=admin)
            assert status == 200, body[:500]
            entries = json.loads(body)["content"]
            overdue = [e for e in entries if isinstance(e, dict) and "feed overdue: incidents" in str(e.get("event"))]
            assert [e.get("level") for e in overdue] == ["warning"], entries[-20:]
            status, body = stack.request(
                "GET", f"/api/v2/dags/tfp_nightly__{A}/dagRuns/{runs[A]}/taskInstances/check_inputs/logs/1"
                       "?full_content=true", token=admin)
            assert "feed overdue" not in body.decode(errors="replace")
            # item 3: the validate log holds tfp's counts and none of Great Expectations' own INFO chatter
            status, body = stack.request(
                "GET", f"/api/v2/dags/tfp_nightly__{A}/dagRuns/{runs[A]}/taskInstances/police.validate/logs/1"
                       "?full_content=true", token=admin)
            entries = [e for e in json.loads(body)["content"] if isinstance(e, dict)]
            assert any(str(e.get("event")).startswith("source police validated: {") for e in entries), entries[-20:]
            chatter = [e for e in entries if str(e.get("logger", "")).startswith("great_expectations")
                       and e.get("level") in ("info", "debug")]
            assert chatter == [], chatter[:5]
        inbox_b.wait(1)
        time.sleep(2)
    # the two nights ran at once
    assert spans[A][0] < spans[B][1] and spans[B][0] < spans[A][1], spans

    # each borough's warning alert went through its own Connection: B's feed was overdue, A's was not
    assert [m["Subject"] for m in inbox_b.messages] == [
        f"[tfp] tfp_nightly__{B} {R}: warning, 1 feed(s) overdue, 0 file(s) with unusual row counts"]
    assert "overdue: incidents, newest file 11 days old (max age 8 days)" in text_of(inbox_b.messages[0])
    assert inbox_a.messages == [] and shared.messages == []

    # each delivery is exactly what that borough's own tfp run delivers, and its console lists the tasks in run order
    for la_code in (A, B):
        root = tmp_path / la_code
        reference = borough(tmp_path / f"reference-{la_code}", la_code)
        done = tfp_run(reference, run_env(reference.parent, {name: env[name] for name in keys[la_code].values()}))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        delivered, expected = files_bytes(root / "delivered"), files_bytes(reference.parent / "delivered")
        assert len(expected) == 6 and delivered == expected, (sorted(delivered), sorted(expected))
        order = _outcome_order(done.stdout)
        assert order[:2] == ["check_setup", "choose_sources"] and order[-1] == "report", order
        for source in ("police", "schools", "children_services"):
            assert order.index(f"{source}.extract") < order.index(f"{source}.validate") < order.index(
                f"{source}.stage") < order.index("check_inputs"), order
        assert order.index("check_inputs") < order.index("link") < order.index("package") < order.index("deliver")

    # nothing crosses: the same people get unrelated tokens; B's manifest verifies with B's key only
    assert _tokens(tmp_path / A, A) and not _tokens(tmp_path / A, A) & _tokens(tmp_path / B, B)
    for signer, expected in ((B, 0), (A, 1)):
        public = _signing_public(env[keys[signer]["signing_key_env"]], tmp_path / f"{signer}.pub")
        verify = subprocess.run([TFP, "verify-delivery", str(tmp_path / B / "delivered"), "--signing-public-key",
                                 str(public)], capture_output=True, text=True, timeout=120)
        assert (verify.returncode != 0) == bool(expected), (signer, verify.stdout + verify.stderr)
    # and no landing key of A opens any landing copy of B (same files, same landing ids), while B's own do
    copies_b, keys_a, keys_b = _landing_copies(tmp_path / B), _landing_keys(tmp_path / A), _landing_keys(tmp_path / B)
    assert copies_b and set(copies_b) <= set(keys_a)
    for landing_id, copy in copies_b.items():
        assert decrypt_from(copy, keys_b[landing_id], landing_id)
        for key in keys_a.values():
            with pytest.raises(LandingTampered):
                decrypt_from(copy, key, landing_id)
    # and each borough's work stayed in its own folders
    assert sorted(p.name for p in (tmp_path / A / "work" / "reports").iterdir()) == [R.isoformat()]
    assert sorted(p.name for p in (tmp_path / B / "work" / "reports").iterdir()) == [R.isoformat()]
