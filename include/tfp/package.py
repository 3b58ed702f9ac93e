"""Stage 8: the files of one delivery, written to the outbox (contract section 7).

Each CSV is optionally age-encrypted to the recipient, then a canonical JSON manifest lists every
delivered file's size, SHA-256 and data rows, and an Ed25519 signature of the manifest's bytes
proves it came from us. age ciphertext differs on every encryption, so when a CSV's plaintext is
unchanged the ciphertext already in the outbox is reused: a re-run then writes the same bytes, the
same manifest and the same signature (Ed25519 signatures are deterministic).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tfp.anonymise import Outputs
from tfp.fsmodes import PRIVATE_FILE, private_dir, write_private

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("submission", "summary", "withdrawals")
# Beside the files in outbox/<date>/: which plaintext and recipient each ciphertext holds. Checksums
# only; it is never delivered.
STATE_FILE = ".package_state.json"


@dataclass(frozen=True)
class PackagedFile:
    """One file of a delivery, in the outbox. ``plaintext_sha256`` identifies the content before
    encryption (for the manifest and signature, their own bytes); ``rows`` is None for those two."""

    name: str
    path: Path
    plaintext_sha256: str
    rows: int | None
    sha256: str | None = None  # of the delivered bytes
    bytes: int | None = None

    @property
    def local_path(self) -> Path:
        return self.path


def file_names(la_code: str, reference_date: date) -> dict[str, str]:
    """The plaintext names of the three CSVs and the manifest for one LA and R."""
    stamp = reference_date.strftime("%Y%m%d")
    names = {kind: f"tfp_{kind}_{la_code}_{stamp}.csv" for kind in KINDS}
    names["manifest"] = f"tfp_manifest_{la_code}_{stamp}.json"
    return names


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so a reader never sees half a file;
    mode 0600, as everything in the outbox is personal. A file that already holds exactly these bytes
    is left alone (its mode made 0600)."""
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        os.chmod(path, PRIVATE_FILE)
        return
    write_private(path, data)


def _load_state(folder: Path) -> dict[str, dict[str, str]]:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _encrypt(plaintext: bytes, recipient: str) -> bytes:
    import pyrage

    return pyrage.encrypt(plaintext, [pyrage.x25519.Recipient.from_str(recipient)])


def sign(manifest: bytes, signing_key: bytes) -> bytes:
    """The .sig file's content: base64 of the Ed25519 signature of the manifest's bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return base64.b64encode(Ed25519PrivateKey.from_private_bytes(signing_key).sign(manifest))


def write_package(outputs: Outputs, outbox: Path, la_code: str, reference_date: date, encryption: str,
                  recipient: str | None, signing_key: bytes, pipeline_version: str) -> list[PackagedFile]:
    """Write the delivery for R into ``outbox/<YYYY-MM-DD>/`` and return its files in delivery order
    (the three CSVs, the manifest, the signature)."""
    if encryption not in ("age", "none"):
        raise ValueError(f"unknown encryption {encryption!r}")
    if encryption == "age" and not (recipient or "").startswith("age1"):
        raise ValueError("encryption age needs an age recipient (age1...)")
    private_dir(Path(outbox))
    folder = private_dir(Path(outbox) / reference_date.isoformat())
    names = file_names(la_code, reference_date)
    previous = _load_state(folder)
    state: dict[str, dict[str, str]] = {}
    texts = {"submission": (outputs.submission, outputs.submission_rows),
             "summary": (outputs.summary, outputs.summary_rows),
             "withdrawals": (outputs.withdrawals, outputs.withdrawal_rows)}

    files: list[PackagedFile] = []
    for kind in KINDS:
        text, rows = texts[kind]
        plaintext = text.encode("utf-8")
        plain_sha = _sha256(plaintext)
        plain_name = names[kind]
        if encryption == "age":
            name = plain_name + ".age"
            path = folder / name
            before = previous.get(name, {})
            reusable = (before.get("plaintext_sha256") == plain_sha and before.get("recipient") == recipient
                        and path.is_file() and _sha256(path.read_bytes()) == before.get("sha256"))
            data = path.read_bytes() if reusable else _encrypt(plaintext, recipient)
            state[name] = {"plaintext_sha256": plain_sha, "recipient": recipient, "sha256": _sha256(data)}
            stale = folder / plain_name
        else:
            name, path, data = plain_name, folder / plain_name, plaintext
            stale = folder / (plain_name + ".age")
        write_atomic(path, data)
        stale.unlink(missing_ok=True)  # the other encryption's copy from an earlier run must not linger
        files.append(PackagedFile(name, path, plain_sha, rows, _sha256(data), len(data)))

    manifest = canonical_json({
        "files": [{"bytes": f.bytes, "name": f.name, "rows": f.rows, "sha256": f.sha256} for f in files],
        "la_code": la_code,
        "pipeline_version": pipeline_version,
        "reference_date": reference_date.isoformat(),
    })
    signature = sign(manifest, signing_key)
    write_atomic(folder / STATE_FILE, canonical_json(state))
    for name, data in ((names["manifest"], manifest), (names["manifest"] + ".sig", signature)):
        write_atomic(folder / name, data)
        files.append(PackagedFile(name, folder / name, _sha256(data), None, _sha256(data), len(data)))
    log.info("packaged %d files for %s in %s (encryption %s)", len(files), reference_date, folder, encryption)
    return files


def packaged_files(outbox: Path, la_code: str, reference_date: date) -> list[PackagedFile]:
    """The files :func:`write_package` wrote for R, read back from the outbox in delivery order.

    Checks every file against the manifest, so a file changed since packaging fails here loudly
    instead of being delivered.
    """
    folder = Path(outbox) / reference_date.isoformat()
    manifest_name = file_names(la_code, reference_date)["manifest"]
    manifest_path = folder / manifest_name
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no package for {reference_date}: {manifest_path} is missing")
    manifest_bytes = manifest_path.read_bytes()
    manifest = json.loads(manifest_bytes)
    state = _load_state(folder)
    files: list[PackagedFile] = []
    for entry in manifest["files"]:
        path = folder / entry["name"]
        data = path.read_bytes()
        if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
            raise ValueError(f"{entry['name']} in the outbox does not match its manifest")
        if entry["name"].endswith(".age"):
            plain_sha = state.get(entry["name"], {}).get("plaintext_sha256")
            if not plain_sha:
                raise ValueError(f"{entry['name']}: its plaintext checksum is not recorded in {STATE_FILE}")
        else:
            plain_sha = entry["sha256"]
        files.append(PackagedFile(entry["name"], path, plain_sha, entry["rows"], entry["sha256"], entry["bytes"]))
    sig_path = folder / (manifest_name + ".sig")
    sig = sig_path.read_bytes()
    files.append(PackagedFile(manifest_name, manifest_path, _sha256(manifest_bytes), None, _sha256(manifest_bytes),
                              len(manifest_bytes)))
    files.append(PackagedFile(sig_path.name, sig_path, _sha256(sig), None, _sha256(sig), len(sig)))
    return files
