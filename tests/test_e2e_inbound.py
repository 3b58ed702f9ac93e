"""`tfp run` twice on one warehouse with the default inbound settings, under umask 022 (review items 2 and 4):
the landed plaintext leaves the partners' drop folders, the second night still succeeds and delivers the same
bytes, and everything personal tfp wrote is 0600 in 0700 folders."""

from __future__ import annotations

import os
import stat

import pytest
from hardening_helpers import files_bytes, landings, make_borough, night_root, run_env, tfp_run

from tfp.warehouse import connect

pytestmark = pytest.mark.slow


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_two_runs_remove_the_plaintext_deliver_the_same_and_write_nothing_readable_by_others(tmp_path_factory):
    borough = make_borough(tmp_path_factory.mktemp("borough"))
    root = tmp_path_factory.mktemp("night")
    config = night_root(root, borough)
    env = run_env(root)
    old = os.umask(0o022)
    try:
        first = tfp_run(config, env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        delivered = files_bytes(root / "delivered")
        second = tfp_run(config, env)
    finally:
        os.umask(old)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "warning:" not in first.stderr  # pytest's folders are the owner's only
    assert len(delivered) == 6 and files_bytes(root / "delivered") == delivered  # four CSVs, manifest, signature
    assert list((root / "inbound").rglob("*.csv")) == []
    rows = landings(connect(f"sqlite:///{root / 'work' / 'warehouse.db'}"))
    assert len(rows) == len(list(borough.rglob("*.csv"))) and {r["status"] for r in rows} == {"staged"}

    work = root / "work"
    database = work / "warehouse.db"
    files = [database, *(p for p in work.glob("warehouse.db-*"))]
    folders = [work, work / "landing", work / "outbox"]
    for top in (work / "landing", work / "outbox"):
        for path in top.rglob("*"):
            (folders if path.is_dir() else files).append(path)
    assert len([p for p in files if p.suffix == ".bin"]) >= 2 * len(rows) - 1
    assert len([p for p in files if "outbox" in p.parts]) >= 5
    assert {str(p): oct(_mode(p)) for p in folders if _mode(p) != 0o700} == {}
    assert {str(p): oct(_mode(p)) for p in files if _mode(p) != 0o600} == {}
