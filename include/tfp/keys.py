"""`tfp keys --out DIR`: the keys of a new installation, written once and never printed.

The repository ships no secret; an installation makes its own keys here and moves them into
environment variables or Airflow Variables (the config names them), then deletes the files.
"""

from __future__ import annotations

import base64
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from tfp.errors import KeysExistError, KeysFolderError
from tfp.fsmodes import private_dir

PRIVATE, PUBLIC = 0o600, 0o644


def _key_files() -> dict[str, tuple[bytes, int]]:
    import pyrage
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    signing = Ed25519PrivateKey.generate()
    signing_raw = signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public_raw = signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    # age.key in age-keygen's own format, so `age -d -i age.key` reads it as well as tfp verify-delivery.
    age_key = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    return {
        "pseudonym.key": ((secrets.token_hex(32) + "\n").encode(), PRIVATE),
        "linkage.key": ((secrets.token_hex(32) + "\n").encode(), PRIVATE),
        "signing.key": (base64.b64encode(signing_raw) + b"\n", PRIVATE),
        "signing.pub": (base64.b64encode(public_raw) + b"\n", PUBLIC),
        "age.key": (age_key.encode(), PRIVATE),
        "age.pub": ((recipient + "\n").encode(), PUBLIC),
    }


def generate_keys(out: Path) -> list[str]:
    """Write the six key files into ``out`` and return what to tell the user (file names, never values)."""
    out = Path(out)
    files = _key_files()
    existing = [name for name in files if (out / name).exists()]
    if existing:
        raise KeysExistError(f"refusing to overwrite existing key files in {out}: {', '.join(existing)}")
    if out.exists() and not out.is_dir():
        raise KeysFolderError(f"cannot write the keys into {out}: it is a file, not a folder")
    lines, written = [], []
    try:
        if not out.is_dir():  # a folder it makes holds secrets: 0700, as every private folder tfp makes
            private_dir(out)
        for name, (content, mode) in files.items():
            path = out / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.chmod(path, mode)  # the umask may have narrowed or (for 0644) kept the bits; be exact
            lines.append(f"wrote {path} (mode {mode:04o})")
            written.append(name)
    except OSError as e:  # the system's reason and the path it names: no key is in either
        where = f" ({e.filename})" if e.filename and Path(e.filename) != out else ""
        partial = f"; delete the files it wrote before it failed: {', '.join(written)}" if written else ""
        raise KeysFolderError(f"cannot write the keys into {out}: {e.strerror or type(e).__name__}{where}{partial}") from None
    lines += [
        "",
        "Set these as environment variables or Airflow Variables (names as in the config's `keys`), then delete",
        "the secret files:",
        f"  TFP_PSEUDONYM_KEY  = the content of {out / 'pseudonym.key'}",
        f"  TFP_LINKAGE_KEY    = the content of {out / 'linkage.key'}",
        f"  TFP_SIGNING_KEY    = the content of {out / 'signing.key'}",
        f"Give {out / 'signing.pub'} to the recipient: `tfp verify-delivery --signing-public-key` checks with it.",
        f"delivery.recipient in the config is the age public key in {out / 'age.pub'}; {out / 'age.key'} decrypts",
        "deliveries and belongs to the recipient only (`--age-identity`). In production the recipient makes its own",
        "age key pair and gives you only its public key.",
        "Never change the pseudonymisation or linkage key during the programme: tokens and match keys would change.",
    ]
    return lines
