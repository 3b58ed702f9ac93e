"""Issue 14 items 2 and 3: check_setup names what the night needs and is missing, before any work, with the
command that creates it (fast: the pipeline's check_setup in-process, no Airflow run)."""

from __future__ import annotations

from datetime import date

import pytest

from helpers import write_config
from tfp import pipeline
from tfp.config import ConfigError
from tfp.extract import SourceUnavailable
from tfp.sftp import SftpError

R = date(2025, 3, 31)


def test_a_missing_sftp_connection_fails_check_setup_with_the_command_that_creates_it(tmp_path, keys_env,
                                                                                       monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SFTP_POLICE", raising=False)
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'w.db'}",
                          sources={"police": {"transport": "sftp", "conn_id": "sftp_police", "path": "/out"}})
    with pytest.raises(SftpError) as missing:
        pipeline.check_setup(str(config), R)
    assert "sftp_police" in str(missing.value) and "airflow connections add sftp_police" in str(missing.value)
    # a run that leaves police out does not need its Connection
    assert pipeline.check_setup(str(config), R, ["dwp"])["la_code"] == "E09000031"


def test_a_missing_folder_or_key_variable_fails_check_setup_naming_it(tmp_path, keys_env, monkeypatch):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'w.db'}",
                          sources={"schools": {"transport": "directory", "path": "inbound/shcools"}})
    (tmp_path / "inbound" / "shcools").rmdir()
    with pytest.raises(SourceUnavailable, match="source schools: drop folder .*shcools does not exist"):
        pipeline.check_setup(str(config), R)
    (tmp_path / "inbound" / "shcools").mkdir()
    monkeypatch.delenv("TFP_SIGNING_KEY")
    monkeypatch.delenv("AIRFLOW_VAR_TFP_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigError, match="signing key is missing: set the environment variable or Airflow "
                                          "Variable TFP_SIGNING_KEY"):
        pipeline.check_setup(str(config), R)
