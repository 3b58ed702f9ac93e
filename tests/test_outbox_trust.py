"""The sender trusts nothing in its outbox that it has not checked (issue 13, review of package and deliver).

Whoever can write to the outbox holds no key. An unsigned edit of the manifest, a replayed manifest, a
ciphertext of their own with an edited state file, or a name with a path must never be delivered; and a
destination file that is not what the delivery log says is sent again. Real files, real age, a real SFTP
server on loopback, the recipient's own `tfp verify-delivery` check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tfp.anonymise import Outputs
from tfp.deliver import deliver
from tfp.package import (
    OutboxTampered,
    PackagedFile,
    PackageTarget,
    canonical_json,
    packaged_files,
    sign,
    write_package,
)
from tfp.sftp import SftpEndpoint
from tfp.verify import verify_delivery
from tfp.warehouse import connect
from tfp_dev.sftpserver import SftpServer

R = date(2025, 3, 31)
LA = "E09000031"
STAMP = "20250331"
MANIFEST = f"tfp_manifest_{LA}_{STAMP}.json"
SUBMISSION = f"tfp_submission_{LA}_{STAMP}.csv"


def outputs(row: str = "real") -> Outputs:
    return Outputs(submission=f"h\n{row}\n", summary="m\n", withdrawals="p\n",
                   submission_rows=1, summary_rows=0, withdrawal_rows=0)


@pytest.fixture
def keys(tmp_path):
    """The sender's signing key, its public half as the recipient holds it, an age identity and recipient."""
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    public = tmp_path / "signing.pub"
    public.write_text(base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode())
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "age.key").write_text(f"{identity}\n")
    return {"signing": raw, "public": public, "identity": tmp_path / "age.key", "recipient": str(identity.to_public())}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def engine_at(tmp_path: Path):
    return connect(f"sqlite:///{tmp_path / 'warehouse.db'}")


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def packaged_then_delivered(outbox: Path, keys, engine, **kw) -> dict[str, int]:
    """What the nightly deliver task does: read the package back from the outbox, then send it."""
    return deliver(packaged_files(outbox, LA, R, keys["signing"]), engine=engine, reference_date=R, **kw)


# -- 1. the outbox manifest is checked before anything it names is read --------------------------------

def test_an_unsigned_manifest_edit_cannot_make_deliver_read_or_write_outside_its_folders(tmp_path, keys):
    """Review repro: an entry `./../../secret.key` (with that file's true size and SHA-256) made deliver read a
    file outside the outbox and write it outside delivery.path."""
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "none", None, keys["signing"], "x"))
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"THE-PSEUDONYM-KEY\n")
    manifest_path = outbox / R.isoformat() / MANIFEST
    manifest = json.loads(manifest_path.read_bytes())
    manifest["files"].append({"bytes": secret.stat().st_size, "name": "./../../secret.key", "rows": None,
                              "sha256": sha(secret.read_bytes())})
    manifest_path.write_bytes(canonical_json(manifest))  # not re-signed: nobody but tfp holds the key
    dest = tmp_path / "a" / "b" / "inbound"
    before = all_files(tmp_path)
    with pytest.raises(OutboxTampered, match=rf"{MANIFEST}.sig does not verify {MANIFEST}"):
        packaged_then_delivered(outbox, keys, engine_at(tmp_path), transport="directory", path=str(dest),
                                conn_id=None)
    assert {k: v for k, v in all_files(tmp_path).items() if not k.startswith("warehouse.db")} == before  # nothing written
    assert not dest.exists()


def test_an_unsigned_manifest_edit_cannot_put_a_file_in_another_councils_sftp_folder(tmp_path, keys):
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "none", None, keys["signing"], "x"))
    folder = outbox / R.isoformat()
    manifest = json.loads((folder / MANIFEST).read_bytes())
    manifest["files"][0]["name"] = f"./../../inbound/E09000032/tfp_submission_E09000032_{STAMP}.csv"
    target = folder / manifest["files"][0]["name"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((folder / SUBMISSION).read_bytes())
    (folder / MANIFEST).write_bytes(canonical_json(manifest))
    with SftpServer(tmp_path / "sftp") as server:
        for la in (LA, "E09000032"):
            (server.root / "inbound" / la).mkdir(parents=True)
        endpoint = SftpEndpoint(host=server.host, port=server.port, username=server.username,
                                password=server.password, private_key=None, host_key=server.host_key)
        with pytest.raises(OutboxTampered, match="does not verify"):
            packaged_then_delivered(outbox, keys, engine_at(tmp_path), transport="sftp", path=f"/inbound/{LA}",
                                    conn_id=None, endpoint=endpoint)
        assert list((server.root / "inbound" / "E09000032").iterdir()) == []
        assert list((server.root / "inbound" / LA).iterdir()) == []


def test_yesterdays_package_renamed_into_todays_outbox_is_not_delivered_as_today(tmp_path, keys):
    """A genuine, signed manifest of another night, renamed to R's names in R's outbox folder."""
    outbox = tmp_path / "outbox"
    yesterday = R - timedelta(days=1)
    write_package(outputs("old"), PackageTarget(outbox, LA, yesterday, "none", None, keys["signing"], "x"))
    old, today = outbox / yesterday.isoformat(), outbox / R.isoformat()
    today.mkdir()
    old_stamp = yesterday.strftime("%Y%m%d")
    for p in old.iterdir():
        shutil.copy(p, today / p.name.replace(old_stamp, STAMP))
        shutil.copy(p, today / p.name)  # the files yesterday's manifest lists, under their own names
    with pytest.raises(OutboxTampered, match=f"NAME MISMATCH {MANIFEST}"):
        packaged_files(outbox, LA, R, keys["signing"])


def test_a_signed_manifest_naming_a_path_is_refused_by_the_recipients_rules(tmp_path, keys):
    """Belt and braces: even a manifest that verifies (say a future packaging bug) may only name plain files
    of this LA and R, each once (tfp.verify.manifest_problems, the rules the recipient applies)."""
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "none", None, keys["signing"], "x"))
    folder = outbox / R.isoformat()
    manifest = json.loads((folder / MANIFEST).read_bytes())
    manifest["files"][0]["name"] = f"../{SUBMISSION}"
    shutil.copy(folder / SUBMISSION, outbox / SUBMISSION)
    data = canonical_json(manifest)
    (folder / MANIFEST).write_bytes(data)
    (folder / (MANIFEST + ".sig")).write_bytes(sign(data, keys["signing"]))
    with pytest.raises(OutboxTampered, match="BAD NAME .* a path rather than a file name"):
        packaged_files(outbox, LA, R, keys["signing"])


def test_a_manifest_signed_with_another_key_is_refused(tmp_path, keys):
    outbox = tmp_path / "outbox"
    other = Ed25519PrivateKey.generate().private_bytes_raw()
    write_package(outputs(), PackageTarget(outbox, LA, R, "none", None, other, "x"))
    with pytest.raises(OutboxTampered, match="does not verify"):
        packaged_files(outbox, LA, R, keys["signing"])


@pytest.mark.parametrize("name", ["./../../secret.key", f"../{SUBMISSION}", f"sub/{SUBMISSION}",
                                  f"..\\{SUBMISSION}", "..", "ABSOLUTE"])
def test_deliver_refuses_a_name_that_is_a_path_and_sends_nothing(tmp_path, name):
    """Defence in depth in deliver itself, whatever its caller hands it."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    local = outbox / "data"
    local.write_bytes(b"h\nx\n")
    if name == "ABSOLUTE":
        name = str(tmp_path / "elsewhere" / SUBMISSION)  # stands for /etc/x: the tests run as root
    files = [PackagedFile(SUBMISSION, local, sha(b"h\nx\n"), 1), PackagedFile(name, local, sha(b"h\nx\n"), 1)]
    dest = tmp_path / "deep" / "er" / "ons"
    dest.mkdir(parents=True)
    before = all_files(tmp_path)
    with pytest.raises(OutboxTampered, match="named by a path rather than a file name; nothing was delivered"):
        deliver(files, transport="directory", path=str(dest), conn_id=None, engine=engine_at(tmp_path),
                reference_date=R)
    assert {k: v for k, v in all_files(tmp_path).items() if not k.startswith("warehouse.db")} == before
    assert list(dest.iterdir()) == []


def test_a_file_swapped_after_the_check_is_not_sent(tmp_path, keys):
    """Between packaged_files' check and the upload, the bytes sent must still be the signed ones."""
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "none", None, keys["signing"], "x"))
    files = packaged_files(outbox, LA, R, keys["signing"])
    (outbox / R.isoformat() / SUBMISSION).write_bytes(b"h\nswap\n")
    dest = tmp_path / "ons"
    with pytest.raises(OutboxTampered, match=f"{SUBMISSION} in the outbox changed after it was checked"):
        deliver(files, transport="directory", path=str(dest), conn_id=None, engine=engine_at(tmp_path),
                reference_date=R)
    assert not (dest / SUBMISSION).exists()


def test_a_link_in_the_outbox_is_not_followed(tmp_path, keys):
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "none", None, keys["signing"], "x"))
    path = outbox / R.isoformat() / SUBMISSION
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(elsewhere)
    with pytest.raises(OutboxTampered, match=f"{SUBMISSION} in the outbox is missing, a link or not a regular file"):
        packaged_files(outbox, LA, R, keys["signing"])


# -- 2. a ciphertext is reused only from a state tfp wrote -------------------------------------------

def _forge_state(folder: Path, name: str, ciphertext: bytes) -> None:
    """What someone who can write the outbox (but holds no key) does: their ciphertext in place, and the
    state's checksum of it edited to match."""
    (folder / name).write_bytes(ciphertext)
    state = json.loads((folder / ".package_state.json").read_text())
    entries = state.get("entries", state)
    entries[name]["sha256"] = sha(ciphertext)
    (folder / ".package_state.json").write_bytes(canonical_json(state))


def test_a_forged_ciphertext_with_an_edited_state_is_never_signed_into_a_manifest(tmp_path, keys):
    """Review repro: the forged CSV, encrypted to the recipient's public key, was reused by the next package
    run, signed into a genuine manifest, verified by the recipient and decrypted as ours."""
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    folder = outbox / R.isoformat()
    name = SUBMISSION + ".age"
    forged = pyrage.encrypt(b"h\nFORGED\n", [pyrage.x25519.Recipient.from_str(keys["recipient"])])
    _forge_state(folder, name, forged)
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))  # the night re-run
    assert (folder / name).read_bytes() != forged
    plain = tmp_path / "plain"
    assert verify_delivery(folder, keys["public"], keys["identity"], plain) == 0
    assert (plain / SUBMISSION).read_bytes() == b"h\nreal\n"


def test_a_forged_ciphertext_with_an_edited_state_is_not_delivered(tmp_path, keys):
    """The same forgery after package, before deliver: the manifest's checksum no longer matches."""
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    forged = pyrage.encrypt(b"h\nFORGED\n", [pyrage.x25519.Recipient.from_str(keys["recipient"])])
    _forge_state(outbox / R.isoformat(), SUBMISSION + ".age", forged)
    with pytest.raises(OutboxTampered):
        packaged_files(outbox, LA, R, keys["signing"])


def test_an_edited_state_cannot_make_deliver_skip_a_changed_output(tmp_path, keys):
    """The plaintext checksum deliver decides "unchanged" by comes from the state: it must verify."""
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    folder = outbox / R.isoformat()
    state = json.loads((folder / ".package_state.json").read_text())
    state["entries"][SUBMISSION + ".age"]["plaintext_sha256"] = sha(b"h\nsomething else\n")
    (folder / ".package_state.json").write_bytes(canonical_json(state))
    with pytest.raises(OutboxTampered, match=r"\.package_state\.json in the outbox does not verify"):
        packaged_files(outbox, LA, R, keys["signing"])


def test_a_state_without_a_valid_mac_means_encrypt_afresh_once_then_reuse(tmp_path, keys):
    """A state from before the MAC (or under another signing key) is not trusted: fresh ciphertexts once;
    from then on a re-run writes the same bytes again."""
    outbox = tmp_path / "outbox"
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    folder = outbox / R.isoformat()
    state = json.loads((folder / ".package_state.json").read_text())
    (folder / ".package_state.json").write_bytes(canonical_json(state["entries"]))  # the old, bare format
    first = (folder / (SUBMISSION + ".age")).read_bytes()
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    again = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert again[SUBMISSION + ".age"] != first
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == again
    assert stat_mode(folder / ".package_state.json") == 0o600 and stat_mode(folder) == 0o700


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


# -- 3. "unchanged" means the destination holds what the log says ------------------------------------

# (a delivery is four CSVs, the manifest and its signature: six files)
def test_a_same_size_different_file_at_the_destination_is_replaced(tmp_path, keys):
    outbox, dest = tmp_path / "outbox", tmp_path / "ons"
    engine = engine_at(tmp_path)
    write_package(outputs(), PackageTarget(outbox, LA, R, "none", None, keys["signing"], "x"))
    kw = {"transport": "directory", "path": str(dest), "conn_id": None}
    assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 6, "skipped": 0}
    good = (dest / SUBMISSION).read_bytes()
    (dest / SUBMISSION).write_bytes(b"h\nfake\n")
    assert len(good) == len(b"h\nfake\n")
    assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 1, "skipped": 5}
    assert (dest / SUBMISSION).read_bytes() == good
    assert verify_delivery(dest, keys["public"], None, tmp_path / "plain") == 0
    assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 0, "skipped": 6}


def test_a_same_size_different_file_on_the_sftp_server_is_replaced(tmp_path, keys):
    outbox = tmp_path / "outbox"
    engine = engine_at(tmp_path)
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    with SftpServer(tmp_path / "sftp") as server:
        remote = server.root / "inbound"
        remote.mkdir()
        endpoint = SftpEndpoint(host=server.host, port=server.port, username=server.username,
                                password=server.password, private_key=None, host_key=server.host_key)
        kw = {"transport": "sftp", "path": "/inbound", "conn_id": None, "endpoint": endpoint}
        assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 6, "skipped": 0}
        name = SUBMISSION + ".age"
        good = (remote / name).read_bytes()
        other = good[:-1] + bytes([good[-1] ^ 1])  # an old ciphertext, a damaged one: of the same size
        (remote / name).write_bytes(other)
        assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 1, "skipped": 5}
        assert (remote / name).read_bytes() == good
        assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 0, "skipped": 6}
    assert verify_delivery(remote, keys["public"], keys["identity"], tmp_path / "plain") == 0


def test_a_fresh_ciphertext_of_an_unchanged_output_is_delivered_with_its_manifest(tmp_path, keys):
    """When package had to encrypt afresh (its state gone or untrusted), the signed manifest lists the new
    ciphertexts: sending the manifest but keeping the old ciphertexts (same plaintext, same size) would leave
    the recipient a delivery that fails its check. Re-runs with an unchanged package still upload nothing."""
    outbox, dest = tmp_path / "outbox", tmp_path / "ons"
    engine = engine_at(tmp_path)
    kw = {"transport": "directory", "path": str(dest), "conn_id": None}
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 6, "skipped": 0}
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 0, "skipped": 6}  # contract 7

    (outbox / R.isoformat() / ".package_state.json").unlink()
    write_package(outputs(), PackageTarget(outbox, LA, R, "age", keys["recipient"], keys["signing"], "x"))
    assert packaged_then_delivered(outbox, keys, engine, **kw) == {"uploaded": 6, "skipped": 0}
    assert verify_delivery(dest, keys["public"], keys["identity"], tmp_path / "plain") == 0
    assert (tmp_path / "plain" / SUBMISSION).read_bytes() == b"h\nreal\n"
