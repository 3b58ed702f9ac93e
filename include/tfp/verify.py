"""`tfp verify-delivery`: what the recipient runs on a delivery folder.

It trusts nothing it has not checked: first the manifest's Ed25519 signature with the sender's
public key, then, against that signed manifest, every file's size, SHA-256 and (after
decryption) its number of data rows. Output names files only, never their contents.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
from pathlib import Path

_FILE_KEYS = {"bytes", "name", "rows", "sha256"}


def _public_key(path: Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = base64.b64decode(Path(path).read_text(encoding="ascii").strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("not a raw 32-byte Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def _identity(path: Path):
    """The first ``AGE-SECRET-KEY-`` line of an age identity file (age-keygen's format: comments allowed)."""
    import pyrage

    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line.strip().startswith("AGE-SECRET-KEY-"):
            return pyrage.x25519.Identity.from_str(line.strip())
    raise ValueError("no AGE-SECRET-KEY- line")


def _data_rows(plaintext: bytes) -> int:
    """CSV records after the header (a quoted field may span lines)."""
    records = sum(1 for _ in csv.reader(io.StringIO(plaintext.decode("utf-8"), newline="")))
    return max(records - 1, 0)


def _check_manifest(manifest_path: Path, public_key) -> tuple[dict | None, list[str]]:
    """The manifest when its signature verifies and its shape is right; else None and the problems."""
    from cryptography.exceptions import InvalidSignature

    sig_path = manifest_path.with_name(manifest_path.name + ".sig")
    manifest_bytes = manifest_path.read_bytes()
    if not sig_path.is_file():
        return None, [f"MISSING {sig_path.name}: the signature of {manifest_path.name} is not there"]
    try:
        signature = base64.b64decode(sig_path.read_bytes().strip(), validate=True)
        public_key.verify(signature, manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        return None, [f"BAD SIGNATURE {manifest_path.name}: {sig_path.name} does not verify it with this public key "
                      "(the manifest or the signature was altered, or the key is not the sender's)"]
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
        entries = manifest["files"]
        if not all(isinstance(e, dict) and _FILE_KEYS <= set(e) for e in entries):
            raise ValueError
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None, [f"BAD MANIFEST {manifest_path.name}: signed, but not a manifest this tool understands"]
    return manifest, []


def _check_file(directory: Path, entry: dict, identity, out: Path) -> tuple[bool, str]:
    name = entry["name"]
    path = directory / Path(name).name  # a name from the manifest never leaves the folder
    if not path.is_file():
        return False, f"MISSING {name}"
    data = path.read_bytes()
    if len(data) != entry["bytes"]:
        return False, f"FAIL {name}: {len(data)} bytes, the manifest says {entry['bytes']} (truncated or altered)"
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return False, f"FAIL {name}: SHA-256 differs from the manifest (altered)"
    if name.endswith(".age"):
        if identity is None:
            return True, f"OK {name} (checksum; not decrypted: give --age-identity to decrypt and count rows)"
        import pyrage

        try:
            plaintext = pyrage.decrypt(data, [identity])
        except pyrage.DecryptError:
            return False, f"FAIL {name}: cannot be decrypted with this age identity"
        target = out / name.removesuffix(".age")
        out.mkdir(parents=True, exist_ok=True)
        target.write_bytes(plaintext)
        where = f", decrypted to {target}"
    else:
        plaintext, where = data, ""
    if entry["rows"] is not None:
        try:
            rows = _data_rows(plaintext)
        except (UnicodeDecodeError, csv.Error):
            return False, f"FAIL {name}: not a UTF-8 CSV"
        if rows != entry["rows"]:
            return False, f"FAIL {name}: {rows} rows, the manifest says {entry['rows']}"
        return True, f"OK {name} ({rows} rows{where})"
    return True, f"OK {name}{where}"


def verify_delivery(directory: Path, signing_public_key: Path, age_identity: Path | None = None,
                    out: Path | None = None) -> int:
    """Check every manifest in ``directory`` and the files it lists; print one line per file.

    Returns 0 when everything verifies, 1 when anything is wrong or missing.
    """
    directory = Path(directory)
    out = Path(out) if out else directory / "decrypted"
    try:
        public_key = _public_key(signing_public_key)
    except (OSError, ValueError) as e:
        print(f"FAIL signing public key {signing_public_key}: {e.__class__.__name__}: cannot be read as base64 "
              "raw Ed25519")
        return 1
    identity = None
    if age_identity is not None:
        try:
            identity = _identity(age_identity)
        except Exception as e:  # pyrage raises its own IdentityError for a malformed key
            print(f"FAIL age identity {age_identity}: {e.__class__.__name__}: not an age identity file")
            return 1
    manifests = sorted(directory.glob("tfp_manifest_*.json"))
    if not manifests:
        print(f"FAIL no tfp_manifest_*.json in {directory}")
        return 1
    problems = 0
    for manifest_path in manifests:
        manifest, errors = _check_manifest(manifest_path, public_key)
        for line in errors:
            print(line)
        if manifest is None:
            problems += len(errors)
            continue
        print(f"OK {manifest_path.name} (signature verifies; {manifest.get('la_code')} "
              f"{manifest.get('reference_date')})")
        for entry in manifest["files"]:
            ok, line = _check_file(directory, entry, identity, out)
            print(line)
            problems += not ok
    print("delivery verified" if problems == 0 else f"delivery NOT verified: {problems} problem(s)")
    return 0 if problems == 0 else 1
