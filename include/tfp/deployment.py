"""Which config a DAG runs: the deployment names it, never a run's trigger form (contract section 10).

- ``TFP_CONFIG``, an environment variable of the deployment, or else the Airflow Variable
  ``TFP_CONFIG`` (Airflow lets only Op and Admin set Variables), read when a task runs (never at parse time): DAGs
  ``tfp_nightly`` and ``tfp_retention``.
- ``TFP_BOROUGHS_DIR``, an environment variable naming a folder the maintainers own, else the checkout's
  ``config/boroughs/`` when it exists: each ``*.yaml`` in it gives DAGs ``tfp_nightly__<la_code>`` and
  ``tfp_retention__<la_code>`` bound to that file.

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
# the checkout's own folder of borough files, used when TFP_BOROUGHS_DIR is not set (maintainers own the repo)
DEFAULT_BOROUGHS = Path(__file__).resolve().parents[2] / "config" / "boroughs"


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
    """``{la_code: config path}`` for every ``*.yaml`` in ``$TFP_BOROUGHS_DIR``, else in the checkout's
    ``config/boroughs/`` (none when neither is there).

    Runs when the DAG files are parsed, so it reads each file's ``local_authority.code`` only. A file
    without a usable code, or with a code an earlier file has, is left out with a warning: one broken
    file must not take the other boroughs' DAGs down.
    """
    folder = os.environ.get(BOROUGHS_VARIABLE) or (str(DEFAULT_BOROUGHS) if DEFAULT_BOROUGHS.is_dir() else None)
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


def _footprint(config) -> dict[str, set[str]]:
    """What a config must not share with another borough's: its key variables, warehouse and work_dir
    (a database URL without its password; paths resolved)."""
    from sqlalchemy.engine import make_url

    keys = config.keys
    url = make_url(config.warehouse_url).set(password=None).render_as_string(hide_password=False)
    return {"keys": {keys.pseudonym_key_env, keys.linkage_key_env, keys.signing_key_env},
            "warehouse_url": {url}, "work_dir": {str(Path(config.work_dir).resolve())}}


def check_isolation(config_path: str) -> None:
    """Fail a borough's night when its config shares a key variable, its warehouse or its work_dir with another
    config of this deployment (another file of ``TFP_BOROUGHS_DIR``, or ``TFP_CONFIG``'s): each borough has its
    own, and nothing crosses between them. Names the files and what they share, never a value."""
    from tfp.config import ConfigError, load_config

    mine = str(Path(config_path).resolve())
    others = dict(boroughs())
    deployment_config = os.environ.get(CONFIG_VARIABLE)
    if deployment_config:
        others.setdefault("TFP_CONFIG", str(Path(deployment_config).resolve()))
    if mine not in others.values():
        return  # a config of its own (tfp run of another file): no deployment to share with
    own = _footprint(load_config(mine))
    for label, path in sorted(others.items()):
        if path == mine:
            continue
        try:
            theirs = _footprint(load_config(path))
        except (ConfigError, OSError):
            continue  # a broken file fails its own DAG's check_setup
        shared = [what for what in own if own[what] & theirs[what]]
        if shared:
            raise ConfigError(
                f"{Path(mine).name} shares {', '.join(shared)} with {Path(path).name} ({label}): each borough "
                "needs its own key variables, warehouse and work_dir",
                hint="give the borough's file its own keys (variable names), warehouse_url and work_dir; see the "
                     "README's Many boroughs, one deployment")


def borough_secret_names() -> list[str]:
    """The variables holding every borough file's secrets (its keys and warehouse password), for Airflow's
    sensitive names; a file that does not load adds none."""
    from tfp.config import ConfigError, load_config, secret_names

    names: list[str] = []
    for path in boroughs().values():
        try:
            names += secret_names(load_config(path))
        except (ConfigError, OSError):
            continue
    return list(dict.fromkeys(names))
