"""Which config a DAG runs: the deployment names it, never a run's trigger form (contract section 10).

- ``TFP_CONFIG``, an environment variable of the deployment, or else the Airflow Variable
  ``TFP_CONFIG`` (Airflow lets only Op and Admin set Variables), read when a task runs (never at parse time): DAGs
  ``tfp_nightly`` and ``tfp_retention``.
- ``TFP_BOROUGHS_DIR``, an environment variable naming a folder the maintainers own: each ``*.yaml`` in it
  gives DAGs ``tfp_nightly__<la_code>`` and ``tfp_retention__<la_code>`` bound to that file.

A run's conf that names a config anyway is refused, so an attempt shows as a failed run and an alert.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)
CONFIG_VARIABLE = "TFP_CONFIG"
BOROUGHS_VARIABLE = "TFP_BOROUGHS_DIR"
LA_CODE = re.compile(r"^E\d{8}$")


def config_path() -> str:
    """The deployment's config: the environment variable ``TFP_CONFIG``, else the Variable (tfp.lookups:
    the Airflow Variable, under ``tfp_airflow``)."""
    from tfp import lookups
    from tfp.config import ConfigError

    path = os.environ.get(CONFIG_VARIABLE) or lookups.installed().variable(CONFIG_VARIABLE)
    if not path:
        raise ConfigError("no config: the deployment names it in the environment variable TFP_CONFIG or the "
                          "Airflow Variable TFP_CONFIG (maintainers only); a trigger cannot choose it")
    return path


def refuse_chosen_config(conf: Mapping | None, params: Mapping | None = None) -> None:
    """Fail a run whose trigger tried to choose the config: the deployment chooses it."""
    from tfp.config import ConfigError

    if "config" in (conf or {}) or "config" in (params or {}):
        raise ConfigError("the run's conf names a config: refused, a trigger cannot choose the config; the "
                          "deployment names it (TFP_CONFIG or TFP_BOROUGHS_DIR)")


def boroughs() -> dict[str, str]:
    """``{la_code: config path}`` for every ``*.yaml`` in ``$TFP_BOROUGHS_DIR`` (none when it is not set).

    Runs when the DAG files are parsed, so it reads each file's ``local_authority.code`` only. A file
    without a usable code, or with a code an earlier file has, is left out with a warning: one broken
    file must not take the other boroughs' DAGs down.
    """
    folder = os.environ.get(BOROUGHS_VARIABLE)
    if not folder:
        return {}
    import yaml

    found: dict[str, str] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            code = (yaml.safe_load(path.read_text(encoding="utf-8")) or {})["local_authority"]["code"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            code = None
        if not isinstance(code, str) or not LA_CODE.match(code):
            log.warning("%s: no valid local_authority.code; no DAGs for this file", path.name)
        elif code in found:
            log.warning("%s: local_authority.code %s is already %s; no DAGs for this file", path.name, code,
                        Path(found[code]).name)
        else:
            found[code] = str(path.resolve())
    return found
