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
from pathlib import Path

import pytest
import yaml

from conftest import make_keys
from helpers import write_config
from tfp import deployment
from tfp.config import ConfigError, example_settings, load_config, load_keys

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

    errors, queues = _parsed_queues(tmp_path, "tfp_{la_code}")  # one queue per borough
    assert errors == [] and set(queues[f"tfp_nightly__{B}"].values()) == {f"tfp_{B}"}
    errors, queues = _parsed_queues(tmp_path, None)  # unset: Airflow's default queue, as before
    assert errors == [] and {q for dag in queues.values() for q in dag.values()} == {"default"}
    errors, _ = _parsed_queues(tmp_path, "tfp_{borough}")  # a placeholder tfp does not know: the DAG says why
    assert errors and all("TFP_CELERY_QUEUE='tfp_{borough}'" in e for e in errors), errors
