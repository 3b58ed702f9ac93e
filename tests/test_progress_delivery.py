"""The progress file in a delivery: written, listed in the signed manifest, encrypted like the other CSVs,
the same bytes on a re-run, and checked by `tfp verify-delivery` (a changed file, or one the manifest
does not list, fails)."""

from __future__ import annotations

import base64
import json
from datetime import date

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tfp.anonymise import Outputs
from tfp.package import PackageTarget, canonical_json, file_names, sign, write_package
from tfp.progress import PROGRESS_HEADER
from tfp.verify import verify_delivery

R = date(2025, 3, 31)
LA = "E09000031"
PROGRESS = f"tfp_progress_{LA}_20250331.csv"
MANIFEST = f"tfp_manifest_{LA}_20250331.json"
ROW = "ab" * 32 + ",intervention,2024-01," + ",".join(["1", "0", "0", "1", "0", "0", "0", "0", "0", "1", "0", "0"]) \
    + ",2,1,0,1\n"
OUTPUTS = Outputs(submission="person_token\n", summary="measure,programme_status,count\n",
                  withdrawals="person_token,withdrawn_on\n", submission_rows=0, summary_rows=0, withdrawal_rows=0,
                  progress=PROGRESS_HEADER + ROW, progress_rows=1)


@pytest.fixture
def keys(tmp_path, keys_env):
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    public = Ed25519PrivateKey.from_private_bytes(signing).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pub = tmp_path / "signing.pub"
    pub.write_text(base64.b64encode(public).decode() + "\n")
    return signing, pub


def test_the_progress_file_is_the_fifth_csv_and_listed_in_the_manifest(tmp_path, keys):
    signing, pub = keys
    files = write_package(OUTPUTS, PackageTarget(tmp_path / "outbox", LA, R, "none", None, signing, "0.1.0"))
    assert [f.name for f in files] == [f"tfp_{k}_{LA}_20250331.csv" for k in
                                       ("submission", "summary", "withdrawals", "progress")] + [MANIFEST, MANIFEST + ".sig"]
    assert file_names(LA, R)["progress"] == PROGRESS
    folder = tmp_path / "outbox" / "2025-03-31"
    manifest = json.loads((folder / MANIFEST).read_bytes())
    entry = next(e for e in manifest["files"] if e["name"] == PROGRESS)
    assert entry["rows"] == 1 and (folder / PROGRESS).read_text(encoding="utf-8") == PROGRESS_HEADER + ROW
    assert verify_delivery(folder, pub, None, None) == 0


def test_an_encrypted_progress_file_is_reused_on_a_rerun_and_decrypts(tmp_path, keys, capsys):
    signing, pub = keys
    identity = pyrage.x25519.Identity.generate()
    target = PackageTarget(tmp_path / "outbox", LA, R, "age", str(identity.to_public()), signing, "0.1.0")
    write_package(OUTPUTS, target)
    folder = tmp_path / "outbox" / "2025-03-31"
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    write_package(OUTPUTS, target)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first  # byte-identical, ciphertext included
    assert PROGRESS + ".age" in first and PROGRESS not in first
    key = tmp_path / "age.key"
    key.write_text(f"{identity}\n")
    assert verify_delivery(folder, pub, key, tmp_path / "plain") == 0
    assert f"OK {PROGRESS}.age (1 rows" in capsys.readouterr().out
    assert (tmp_path / "plain" / PROGRESS).read_text(encoding="utf-8") == PROGRESS_HEADER + ROW


def test_a_changed_progress_file_fails_verification(tmp_path, keys, capsys):
    signing, pub = keys
    write_package(OUTPUTS, PackageTarget(tmp_path / "outbox", LA, R, "none", None, signing, "0.1.0"))
    folder = tmp_path / "outbox" / "2025-03-31"
    path = folder / PROGRESS
    path.write_text(path.read_text(encoding="utf-8").replace(",2,1,0,1\n", ",2,1,1,1\n"), encoding="utf-8")
    assert verify_delivery(folder, pub, None, None) == 1
    assert any(PROGRESS in line for line in capsys.readouterr().out.splitlines() if not line.startswith("OK "))


def test_a_progress_file_the_signed_manifest_does_not_list_fails(tmp_path, keys, capsys):
    """A sender that signed a manifest without the progress file (or someone who added one) fails: every
    tfp_* file in the folder must be covered by a verified manifest."""
    signing, pub = keys
    write_package(OUTPUTS, PackageTarget(tmp_path / "outbox", LA, R, "none", None, signing, "0.1.0"))
    folder = tmp_path / "outbox" / "2025-03-31"
    manifest = json.loads((folder / MANIFEST).read_bytes())
    manifest["files"] = [e for e in manifest["files"] if e["name"] != PROGRESS]
    data = canonical_json(manifest)
    (folder / MANIFEST).write_bytes(data)
    (folder / (MANIFEST + ".sig")).write_bytes(sign(data, signing))
    assert verify_delivery(folder, pub, None, None) == 1
    assert any(PROGRESS in line for line in capsys.readouterr().out.splitlines() if not line.startswith("OK "))
