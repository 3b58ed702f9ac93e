"""Review issue 13, items 1 and 7: the deployment, never a trigger, chooses the config, and secrets are masked.

- A run's conf naming a config (the review's attack: a YAML file left in a drop folder, a run pointed
  at it from the trigger form) is refused; the attacker's config is never read.
- ``TFP_CONFIG`` comes from the environment or an Airflow Variable; ``TFP_BOROUGHS_DIR`` gives one pair
  of DAGs per borough file, fixed when the DAGs are parsed.
- A secret tfp reads is registered with Airflow's masker; a secrets backend that fails is an error,
  not "the key is missing".
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hardening_helpers import R, run_env

from conftest import make_keys
from helpers import write_config
from tfp import deployment
from tfp.config import (
    ConfigError,
    example_settings,
    load_config,
    read_secret,
    secret_names,
    sensitive_var_conn_names,
)

DAGS = Path(__file__).resolve().parents[1] / "dags"


# -- which config ----------------------------------------------------------------------------------

def test_config_path_is_the_environment_then_the_airflow_variable_else_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("TFP_CONFIG", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_TFP_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TFP_CONFIG.*a trigger cannot choose it"):
        deployment.config_path()
    # an Airflow Variable (here from Airflow's own environment-variables secrets backend)
    monkeypatch.setenv("AIRFLOW_VAR_TFP_CONFIG", str(tmp_path / "from-variable.yaml"))
    assert deployment.config_path() == str(tmp_path / "from-variable.yaml")
    monkeypatch.setenv("TFP_CONFIG", str(tmp_path / "from-env.yaml"))
    assert deployment.config_path() == str(tmp_path / "from-env.yaml")


def test_a_conf_or_param_naming_a_config_is_refused():
    for conf, params in (({"config": "/attacker.yaml"}, {}), ({}, {"config": "/attacker.yaml"}),
                         ({"config": ""}, None)):
        with pytest.raises(ConfigError, match="a trigger cannot choose the config"):
            deployment.refuse_chosen_config(conf, params)
    deployment.refuse_chosen_config({"reference_date": "2025-03-31", "dry_run": True}, {"sources": []})
    deployment.refuse_chosen_config(None, None)


def _borough_file(folder: Path, name: str, code: str) -> Path:
    raw = example_settings(local_authority={"code": code, "name": f"Borough {code}"})
    path = folder / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_boroughs_dir_gives_one_dag_pair_per_file_and_skips_a_broken_or_duplicate_file(monkeypatch, tmp_path):
    first = _borough_file(tmp_path, "a.yaml", "E09000031")
    second = _borough_file(tmp_path, "b.yaml", "E09000032")
    _borough_file(tmp_path, "c.yaml", "E09000032")  # the same borough again: ambiguous, left out
    (tmp_path / "broken.yaml").write_text("local_authority: [", encoding="utf-8")
    (tmp_path / "nocode.yaml").write_text("local_authority: {code: '../x'}\n", encoding="utf-8")
    monkeypatch.delenv("TFP_BOROUGHS_DIR", raising=False)
    assert deployment.boroughs() == {}
    monkeypatch.setenv("TFP_BOROUGHS_DIR", str(tmp_path))
    assert deployment.boroughs() == {"E09000031": str(first), "E09000032": str(second)}

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"tfp_nightly", "tfp_retention", "tfp_nightly__E09000031", "tfp_retention__E09000031",
                                "tfp_nightly__E09000032", "tfp_retention__E09000032"}
    # one factory: a borough's DAG has the same tasks and wiring as the deployment's
    for kind in ("tfp_nightly", "tfp_retention"):
        shape = {t.task_id: t.upstream_task_ids for t in bag.dags[kind].tasks}
        assert {t.task_id: t.upstream_task_ids for t in bag.dags[f"{kind}__E09000032"].tasks} == shape
        assert "E09000032" in bag.dags[f"{kind}__E09000032"].tags


def test_no_dag_lets_the_trigger_form_choose_the_config(monkeypatch, tmp_path):
    _borough_file(tmp_path, "a.yaml", "E09000031")
    monkeypatch.setenv("TFP_BOROUGHS_DIR", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert len(bag.dags) == 4
    for dag_id, dag in bag.dags.items():
        assert "config" not in dag.params, dag_id


@pytest.mark.slow
def test_a_run_whose_conf_names_an_attackers_config_is_refused_and_never_reads_it(tmp_path):
    """The review's attack: a YAML file in a drop folder (k: 1, its own warehouse and delivery folder) and
    a run triggered with ``{"config": <that file>}``. The run fails at check_setup; the attacker's folders
    are never created, nothing is delivered to them."""
    legit = write_config(tmp_path / "borough", f"sqlite:///{tmp_path / 'borough' / 'warehouse.db'}")
    drop = tmp_path / "borough" / "inbound" / "police"
    attacker = write_config(drop, f"sqlite:///{tmp_path / 'attacker' / 'loot.db'}",
                            work_dir=str(tmp_path / "attacker" / "work"),
                            delivery={"transport": "directory", "path": str(tmp_path / "attacker" / "out"),
                                      "encryption": "none"},
                            anonymisation={"k": 1})
    code = ("import sys, datetime; from tfp_airflow.runner import run_dag; "
            "state, _ = run_dag('tfp_nightly', sys.argv[1], datetime.date.fromisoformat(sys.argv[2]), "
            "{'config': sys.argv[3]}); print('STATE', state)")
    env = run_env(tmp_path / "borough", make_keys())
    done = subprocess.run([sys.executable, "-c", code, str(legit), R.isoformat(), str(attacker)], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    output = done.stdout + done.stderr
    assert "STATE failed" in output, output[-4000:]
    assert "a trigger cannot choose the config" in output, output[-4000:]
    assert not (tmp_path / "attacker").exists()
    with sqlite3.connect(f"file:{tmp_path / 'borough' / 'airflow' / 'airflow.db'}?mode=ro", uri=True) as conn:
        states = dict(conn.execute("SELECT task_id, state FROM task_instance"))
    assert states["check_setup"] == "failed"
    assert states["deliver"] == "upstream_failed"


# -- secrets ---------------------------------------------------------------------------------------

def test_a_secret_read_from_the_environment_or_a_variable_is_redacted_from_log_lines(monkeypatch):
    import airflow.sdk.log  # noqa: F401 - Airflow is loaded, as in every task
    from airflow.sdk.log import redact

    keys = make_keys()
    monkeypatch.setenv("TFP_LINKAGE_KEY", keys["TFP_LINKAGE_KEY"])
    monkeypatch.delenv("TFP_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_VAR_TFP_PSEUDONYM_KEY", keys["TFP_PSEUDONYM_KEY"])  # an Airflow Variable
    for name in ("TFP_LINKAGE_KEY", "TFP_PSEUDONYM_KEY"):
        value = read_secret(name)
        assert value == keys[name]
        line = redact(f"linking with key {value} tonight")
        assert value not in line and "***" in line, name


def test_a_variable_that_is_not_set_is_none(monkeypatch):
    monkeypatch.delenv("TFP_NOT_SET_ANYWHERE", raising=False)
    assert read_secret("TFP_NOT_SET_ANYWHERE") is None


def test_a_secrets_backend_that_denies_access_is_an_error_not_a_missing_key(tmp_path):
    """Through the adapter's lookups (installed as a task installs them), a denial reading a Variable or a
    Connection is SecretsBackendError (a ConfigError) naming it; only "not defined" is absent."""
    (tmp_path / "denying_backend.py").write_text(
        "from airflow.secrets import BaseSecretsBackend\n"
        "from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied\n\n\n"
        "class Backend(BaseSecretsBackend):\n"
        "    def get_variable(self, key, team_name=None):\n"
        "        raise AirflowSecretsBackendAccessDenied(key)\n\n"
        "    def get_conn_value(self, conn_id, team_name=None):\n"
        "        raise AirflowSecretsBackendAccessDenied(conn_id)\n", encoding="utf-8")
    env = run_env(tmp_path, {}, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]),
                  AIRFLOW__SECRETS__BACKEND="denying_backend.Backend")
    env.pop("TFP_LINKAGE_KEY", None)
    code = ("import tfp_airflow\n"
            "from tfp.errors import SecretsBackendError\n"
            "from tfp.config import read_secret\n"
            "from tfp.sftp import endpoint_from_connection\n"
            "tfp_airflow.install()\n"
            "for read, name in ((read_secret, 'TFP_LINKAGE_KEY'), (endpoint_from_connection, 'sftp_ons')):\n"
            "    try:\n        print('VALUE', read(name))\n"
            "    except SecretsBackendError as e:\n        print('ERROR', e)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERROR the secrets backend failed reading the variable TFP_LINKAGE_KEY" in done.stdout, (
        done.stdout + done.stderr[-3000:])
    assert "ERROR the secrets backend failed reading the Connection sftp_ons" in done.stdout, (
        done.stdout + done.stderr[-3000:])


def test_the_sensitive_names_are_the_configs_secret_variables_in_lower_case(tmp_path):
    config = load_config(write_config(tmp_path, "postgresql+psycopg://tfp@db/tfp",
                                      warehouse_password_env="TFP_WAREHOUSE_PASSWORD"))
    names = secret_names(config)
    assert names == ["TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY", "TFP_SIGNING_KEY", "TFP_WAREHOUSE_PASSWORD"]
    assert sensitive_var_conn_names(names, "Vault_Token, tfp_linkage_key") == (
        "vault_token,tfp_linkage_key,tfp_pseudonym_key,tfp_signing_key,tfp_warehouse_password")


def test_tfp_run_registers_the_key_names_as_sensitive_for_airflow(tmp_path):
    """``prepare_airflow`` merges the config's secret names into an operator's own sensitive names, and
    Airflow then treats a Variable of each name as sensitive."""
    config = load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 'w.db'}"))
    code = ("import sys; from pathlib import Path; from tfp_airflow.runner import prepare_airflow\n"
            "prepare_airflow(Path(sys.argv[1]), sys.argv[2].split(','))\n"
            "from airflow.sdk._shared.secrets_masker import should_hide_value_for_key\n"
            "import os; print(os.environ['AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES'])\n"
            "print([n for n in sys.argv[2].split(',') if should_hide_value_for_key(n)])\n")
    env = run_env(tmp_path, {}, AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES="my_own_token")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), ",".join(secret_names(config))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    names, hidden = done.stdout.strip().splitlines()[-2:]
    assert names == "my_own_token,tfp_pseudonym_key,tfp_linkage_key,tfp_signing_key"
    assert hidden == str(secret_names(config))


def test_the_dags_folder_is_the_one_airflow_is_told_else_the_one_tfp_ships(monkeypatch, tmp_path):
    """AIRFLOW__CORE__DAGS_FOLDER wins (the image's scheduler and its tfp run read the same files);
    unset, tfp runs the DAG files it ships (tests/test_packaging.py runs them from a wheel)."""
    from tfp_airflow import runner

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path / "mine"))
    assert runner.dags_folder() == tmp_path / "mine"
    monkeypatch.delenv("AIRFLOW__CORE__DAGS_FOLDER")
    assert (runner.dags_folder() / "tfp_nightly.py").is_file()
    assert (runner.dags_folder() / "tfp_retention.py").is_file()


def test_a_dags_folder_that_is_not_there_or_has_no_tfp_dag_is_a_clear_error(monkeypatch, tmp_path):
    """A wrong AIRFLOW__CORE__DAGS_FOLDER fails before Airflow is set up, naming the variable;
    one without tfp's DAGs says which DAG is missing instead of failing on ``None.test``."""
    from tfp_airflow import runner

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="AIRFLOW__CORE__DAGS_FOLDER .*nowhere is not a folder") as raised:
        runner._dag_source()
    assert "unset it" in raised.value.hint
    (tmp_path / "others").mkdir()
    (tmp_path / "others" / "theirs.py").write_text("# not a DAG\n")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path / "others"))
    folder, where, fix = runner._dag_source()
    with pytest.raises(ConfigError, match="AIRFLOW__CORE__DAGS_FOLDER .*others has no DAG tfp_nightly"):
        runner._get_dag("tfp_nightly", folder, where, fix)
