"""Packaging (contract section 7): file names, canonical manifest, Ed25519 signature, age encryption,
and byte-identical re-runs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import date

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tfp.anonymise import Outputs
from tfp.package import OutboxTampered, PackageTarget, packaged_files, write_package

R = date(2025, 3, 31)
LA = "E09000031"
CSV_NAMES = [f"tfp_submission_{LA}_20250331.csv", f"tfp_summary_{LA}_20250331.csv",
             f"tfp_withdrawals_{LA}_20250331.csv", f"tfp_progress_{LA}_20250331.csv"]
MANIFEST = f"tfp_manifest_{LA}_20250331.json"


def outputs(withdrawn: str = "ab12") -> Outputs:
    return Outputs(
        submission="reference_date,la_code,person_token\n2025-03-31,E09000031,\"a,b\"\n2025-03-31,E09000031,c\n",
        summary="measure,programme_status,count\nfamilies_assessed,all,[c]\n",
        withdrawals=f"person_token,withdrawn_on\n{withdrawn},2025-01-20\n",
        submission_rows=2, summary_rows=1, withdrawal_rows=1,
    )


def signing_key(keys_env) -> bytes:
    return base64.b64decode(keys_env["TFP_SIGNING_KEY"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_plain_package_names_manifest_and_signature(tmp_path, keys_env):
    files = write_package(outputs(), PackageTarget(tmp_path, LA, R, "none", None, signing_key(keys_env), "1.2.3"))
    folder = tmp_path / "2025-03-31"
    assert [f.name for f in files] == [*CSV_NAMES, MANIFEST, MANIFEST + ".sig"]
    assert all(f.path == folder / f.name for f in files)
    assert [f.rows for f in files] == [2, 1, 1, 0, None, None]  # the progress file: its header only here
    plain = [outputs().submission, outputs().summary, outputs().withdrawals, outputs().progress]
    for f, text in zip(files, plain, strict=False):
        assert f.path.read_bytes() == text.encode("utf-8")
        assert f.plaintext_sha256 == sha(text.encode("utf-8"))

    entries = ",".join(
        f'{{"bytes":{len(t.encode())},"name":"{n}","rows":{r},"sha256":"{sha(t.encode())}"}}'
        for n, t, r in zip(CSV_NAMES, plain, (2, 1, 1, 0), strict=True))
    expected = f'{{"files":[{entries}],"la_code":"{LA}","pipeline_version":"1.2.3","reference_date":"2025-03-31"}}'
    manifest = (folder / MANIFEST).read_bytes()
    assert manifest == expected.encode("utf-8")
    assert json.loads(manifest)["files"][0]["name"] == CSV_NAMES[0]

    public = Ed25519PrivateKey.from_private_bytes(signing_key(keys_env)).public_key()
    public.verify(base64.b64decode((folder / (MANIFEST + ".sig")).read_bytes(), validate=True), manifest)
    # nothing else is left in the folder but the package and its state (no temporary files)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*CSV_NAMES, MANIFEST, MANIFEST + ".sig",
                                                               ".package_state.json"])


def test_plain_package_is_byte_identical_across_runs(tmp_path, keys_env):
    write_package(outputs(), PackageTarget(tmp_path / "a", LA, R, "none", None, signing_key(keys_env), "1.2.3"))
    write_package(outputs(), PackageTarget(tmp_path / "b", LA, R, "none", None, signing_key(keys_env), "1.2.3"))
    assert folder_bytes(tmp_path / "a" / "2025-03-31") == folder_bytes(tmp_path / "b" / "2025-03-31")


def test_age_round_trip_and_manifest_of_the_ciphertext(tmp_path, keys_env):
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    files = write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    assert [f.name for f in files[:4]] == [n + ".age" for n in CSV_NAMES]
    manifest = json.loads(files[4].path.read_bytes())
    for f, text, entry in zip(files, [outputs().submission, outputs().summary, outputs().withdrawals,
                                      outputs().progress],
                              manifest["files"], strict=False):
        data = f.path.read_bytes()
        assert text.encode() not in data
        assert pyrage.decrypt(data, [identity]) == text.encode("utf-8")
        assert f.plaintext_sha256 == sha(text.encode())
        assert entry == {"bytes": len(data), "name": f.name, "rows": f.rows, "sha256": sha(data)}
    assert not any((tmp_path / "2025-03-31" / n).exists() for n in CSV_NAMES)  # no plaintext beside it


def test_age_rerun_reuses_ciphertext_and_reencrypts_only_what_changed(tmp_path, keys_env):
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    folder = tmp_path / "2025-03-31"
    write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    first = folder_bytes(folder)
    write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    assert folder_bytes(folder) == first  # same ciphertext, manifest and signature

    write_package(outputs(withdrawn="cd34"), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    changed = folder_bytes(folder)
    assert changed[CSV_NAMES[0] + ".age"] == first[CSV_NAMES[0] + ".age"]
    assert changed[CSV_NAMES[2] + ".age"] != first[CSV_NAMES[2] + ".age"]
    assert changed[MANIFEST] != first[MANIFEST]

    other = str(pyrage.x25519.Identity.generate().to_public())  # a new recipient: everything re-encrypted
    write_package(outputs(withdrawn="cd34"), PackageTarget(tmp_path, LA, R, "age", other, signing_key(keys_env), "1.2.3"))
    assert folder_bytes(folder)[CSV_NAMES[0] + ".age"] != first[CSV_NAMES[0] + ".age"]


def test_a_damaged_ciphertext_is_not_reused(tmp_path, keys_env):
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    files = write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    files[0].path.write_bytes(files[0].path.read_bytes()[:-5])
    again = write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    assert pyrage.decrypt(again[0].path.read_bytes(), [identity]) == outputs().submission.encode()


def test_switching_encryption_leaves_no_stale_copy(tmp_path, keys_env):
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    write_package(outputs(), PackageTarget(tmp_path, LA, R, "none", None, signing_key(keys_env), "1.2.3"))
    names = {p.name for p in (tmp_path / "2025-03-31").iterdir()}
    assert not any(n.endswith(".age") for n in names)


def test_packaged_files_reads_back_what_was_written(tmp_path, keys_env):
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    written = write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", recipient, signing_key(keys_env), "1.2.3"))
    assert packaged_files(tmp_path, LA, R, signing_key(keys_env)) == written
    os.truncate(written[1].path, 10)
    with pytest.raises(OutboxTampered, match="does not match its manifest"):
        packaged_files(tmp_path, LA, R, signing_key(keys_env))


def test_age_needs_a_recipient(tmp_path, keys_env):
    with pytest.raises(ValueError, match="age recipient"):
        write_package(outputs(), PackageTarget(tmp_path, LA, R, "age", None, signing_key(keys_env), "1.2.3"))
