"""`tfp keys` and `tfp verify-delivery`: new keys are written safely and never shown; the recipient's
check accepts a good delivery and names the file of every kind of damage."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import stat
from datetime import date
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tfp.anonymise import Outputs
from tfp.cli import main
from tfp.config import ConfigError
from tfp.keys import KeysExistError, generate_keys
from tfp.package import write_package
from tfp.verify import verify_delivery

R = date(2025, 3, 31)
LA = "E09000031"
SUBMISSION = f"tfp_submission_{LA}_20250331.csv"
SUMMARY = f"tfp_summary_{LA}_20250331.csv"
MANIFEST = f"tfp_manifest_{LA}_20250331.json"

OUTPUTS = Outputs(
    submission="reference_date,la_code,person_token\n2025-03-31,E09000031,\"multi\nline\"\n2025-03-31,E09000031,b\n",
    summary="measure,programme_status,count\nfamilies_assessed,all,[c]\n",
    withdrawals="person_token,withdrawn_on\n",
    submission_rows=2, summary_rows=1, withdrawal_rows=0,
)


# -- keys ------------------------------------------------------------------------------------------

def test_generate_keys_writes_six_usable_files_with_tight_modes(tmp_path):
    out = tmp_path / "keys"
    lines = generate_keys(out)
    files = {p.name: p for p in out.iterdir()}
    assert set(files) == {"pseudonym.key", "linkage.key", "signing.key", "signing.pub", "age.key", "age.pub"}
    modes = {name: stat.S_IMODE(p.stat().st_mode) for name, p in files.items()}
    assert modes == {"pseudonym.key": 0o600, "linkage.key": 0o600, "signing.key": 0o600, "age.key": 0o600,
                     "signing.pub": 0o644, "age.pub": 0o644}

    text = {name: p.read_text().strip() for name, p in files.items()}
    assert re.fullmatch(r"[0-9a-f]{64}", text["pseudonym.key"])
    assert re.fullmatch(r"[0-9a-f]{64}", text["linkage.key"])
    assert text["pseudonym.key"] != text["linkage.key"]
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text["signing.key"], validate=True))
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert base64.b64decode(text["signing.pub"], validate=True) == public_raw
    secret_line = next(line for line in text["age.key"].splitlines() if line.startswith("AGE-SECRET-KEY-"))
    identity = pyrage.x25519.Identity.from_str(secret_line)
    assert str(identity.to_public()) == text["age.pub"]

    said = "\n".join(lines)
    for secret in (text["pseudonym.key"], text["linkage.key"], text["signing.key"], secret_line):
        assert secret not in said
    for variable in ("TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY", "TFP_SIGNING_KEY"):
        assert variable in said


def test_generate_keys_modes_do_not_depend_on_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        generate_keys(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "signing.pub").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "age.pub").stat().st_mode) == 0o644


def test_generate_keys_refuses_to_overwrite(tmp_path):
    generate_keys(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeysExistError) as caught:
        generate_keys(tmp_path)
    assert isinstance(caught.value, ConfigError) and "pseudonym.key" in str(caught.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    lonely = tmp_path / "other"
    lonely.mkdir()
    (lonely / "age.pub").write_text("mine\n")
    with pytest.raises(KeysExistError):
        generate_keys(lonely)
    assert [p.name for p in lonely.iterdir()] == ["age.pub"]  # nothing written beside it


def test_cli_keys(tmp_path, capsys):
    assert main(["keys", "--out", str(tmp_path / "k")]) == 0
    assert "signing.pub" in capsys.readouterr().out
    assert main(["keys", "--out", str(tmp_path / "k")]) == 2  # refused, with a message, no traceback
    assert "refusing to overwrite" in capsys.readouterr().err


# -- verify-delivery -------------------------------------------------------------------------------

@pytest.fixture
def delivery(tmp_path, keys_env):
    """An age-encrypted package signed with the test's signing key, the public key file and the identity file."""
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    public = Ed25519PrivateKey.from_private_bytes(signing).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pub_file = tmp_path / "signing.pub"
    pub_file.write_text(base64.b64encode(public).decode() + "\n")
    identity = pyrage.x25519.Identity.generate()
    id_file = tmp_path / "age.key"
    id_file.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
    write_package(OUTPUTS, tmp_path / "outbox", LA, R, "age", str(identity.to_public()), signing, "0.1.0")
    return tmp_path / "outbox" / "2025-03-31", pub_file, id_file


def run(delivery, capsys, **kwargs) -> tuple[int, str]:
    folder, pub, identity = delivery
    code = verify_delivery(folder, pub, kwargs.get("identity", identity), kwargs.get("out"))
    return code, capsys.readouterr().out


def test_a_good_delivery_verifies_and_decrypts(delivery, capsys, tmp_path):
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 0, said
    assert said.count("OK ") == 4  # the manifest and three files
    assert f"OK {SUBMISSION}.age (2 rows" in said
    assert (tmp_path / "plain" / SUBMISSION).read_text() == OUTPUTS.submission
    assert (tmp_path / "plain" / SUMMARY).read_bytes() == OUTPUTS.summary.encode()


def test_default_out_and_without_identity(delivery, capsys):
    folder = delivery[0]
    code, _ = run(delivery, capsys)
    assert code == 0 and (folder / "decrypted" / SUBMISSION).is_file()
    code, said = run(delivery, capsys, identity=None)
    assert code == 0 and "not decrypted" in said


def test_a_plain_delivery_verifies(tmp_path, keys_env, delivery, capsys):
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    write_package(OUTPUTS, tmp_path / "plain_outbox", LA, R, "none", None, signing, "0.1.0")
    code = verify_delivery(tmp_path / "plain_outbox" / "2025-03-31", delivery[1], None, None)
    said = capsys.readouterr().out
    assert code == 0, said
    assert f"OK {SUBMISSION} (2 rows)" in said


def test_cli_verify_delivery(delivery, capsys):
    folder, pub, identity = delivery
    assert main(["verify-delivery", str(folder), "--signing-public-key", str(pub), "--age-identity", str(identity)]) == 0
    (folder / (SUBMISSION + ".age")).unlink()
    assert main(["verify-delivery", str(folder), "--signing-public-key", str(pub)]) == 1
    assert f"MISSING {SUBMISSION}.age" in capsys.readouterr().out


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip_csv", "truncate_csv", "alter_manifest", "alter_sig", "drop_file",
                                    "drop_sig"])
def test_any_damage_fails_naming_the_file(delivery, capsys, damage):
    folder = delivery[0]
    target = {"flip_csv": SUBMISSION + ".age", "truncate_csv": SUMMARY + ".age", "alter_manifest": MANIFEST,
              "alter_sig": MANIFEST + ".sig", "drop_file": SUMMARY + ".age", "drop_sig": MANIFEST + ".sig"}[damage]
    path = folder / target
    if damage == "flip_csv":
        flip_byte(path, len(path.read_bytes()) // 2)
    elif damage == "truncate_csv":
        path.write_bytes(path.read_bytes()[:-16])
    elif damage == "alter_manifest":
        path.write_bytes(path.read_bytes().replace(b'"rows":2', b'"rows":3'))
    elif damage == "alter_sig":
        sig = bytearray(base64.b64decode(path.read_bytes()))
        sig[0] ^= 0x01
        path.write_bytes(base64.b64encode(bytes(sig)))
    else:
        path.unlink()
    code, said = run(delivery, capsys)
    assert code == 1
    if damage == "truncate_csv":
        assert f"FAIL {SUMMARY}.age: " in said and "truncated" in said
    problem_lines = [line for line in said.splitlines() if not line.startswith("OK ")]
    assert any(target in line for line in problem_lines), said


def test_a_plaintext_csv_changed_after_signing_fails(tmp_path, keys_env, delivery, capsys):
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    write_package(OUTPUTS, tmp_path / "plain_outbox", LA, R, "none", None, signing, "0.1.0")
    folder = tmp_path / "plain_outbox" / "2025-03-31"
    flip_byte(folder / SUBMISSION, 3)
    assert verify_delivery(folder, delivery[1], None, None) == 1
    assert f"FAIL {SUBMISSION}" in capsys.readouterr().out


def test_a_row_count_that_differs_from_the_signed_manifest_fails(tmp_path, keys_env, delivery, capsys):
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    wrong = dataclasses.replace(OUTPUTS, summary_rows=4)  # the sender signed a wrong count
    write_package(wrong, tmp_path / "wrong", LA, R, "none", None, signing, "0.1.0")
    assert verify_delivery(tmp_path / "wrong" / "2025-03-31", delivery[1], None, None) == 1
    assert f"FAIL {SUMMARY}: 1 rows, the manifest says 4" in capsys.readouterr().out


def test_a_foreign_public_key_or_identity_fails(delivery, capsys, tmp_path):
    folder, _, identity = delivery
    stranger = tmp_path / "stranger.pub"
    stranger.write_text(base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)).decode())
    assert verify_delivery(folder, stranger, identity, None) == 1
    assert f"BAD SIGNATURE {MANIFEST}" in capsys.readouterr().out

    other = tmp_path / "other.key"
    other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    assert verify_delivery(folder, delivery[1], other, None) == 1
    assert "cannot be decrypted" in capsys.readouterr().out

    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not base64!")
    assert verify_delivery(folder, garbage, identity, None) == 1


def test_an_empty_folder_fails(tmp_path, delivery, capsys):
    (tmp_path / "empty").mkdir()
    assert verify_delivery(tmp_path / "empty", delivery[1], None, None) == 1
    assert "no tfp_manifest" in capsys.readouterr().out
