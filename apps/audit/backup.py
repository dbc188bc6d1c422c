"""Encrypted audit backup files: the format, the key, encryption and authenticated reading.

A backup holds a contiguous run of events as JSONL, encrypted with AES-256-GCM under AUDIT_BACKUP_KEY (32 random
bytes, base64). Layout:

    line 1   b"CLINPREDICT-AUDIT-BACKUP 1\\n"
    line 2   manifest JSON + b"\\n"  (clear text: range, chain head, key id, chunk count; authenticated, see below)
    chunks   repeated: 4-byte big-endian length N, 12-byte random nonce, N bytes of AES-GCM ciphertext + tag

Each chunk encrypts up to `chunk_events` JSONL lines. Its associated data binds it to this file's header (SHA-256 of
lines 1-2), to its position and to whether it is the last chunk, so a changed manifest, a swapped, dropped, repeated
or truncated chunk, or a wrong key all fail authentication. Readers authenticate every chunk before handing out its
events; callers that restore do so inside one transaction, so a failure anywhere restores nothing.

Generate a key:  python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"
             or  python manage.py backup_audit --generate-key
"""

import base64
import binascii
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apps.core.exceptions import ApplicationError

from .hashing import canonical_json

MAGIC = b"CLINPREDICT-AUDIT-BACKUP 1\n"
FORMAT = "clinpredict-audit-backup"
CIPHER = "AES-256-GCM"
CHUNK_EVENTS = 5000
_NONCE_BYTES = 12
_MAX_MANIFEST_BYTES = 64 * 1024
_MAX_CHUNK_BYTES = 1 << 30
KEY_SETTING = "AUDIT_BACKUP_KEY"
KEY_HELP = ('generate one with: python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())" '
            "(or python manage.py backup_audit --generate-key)")


class BackupError(ApplicationError):
    pass


def generate_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


def parse_key(value: str) -> bytes:
    """The 32-byte key from its base64 form, or a BackupError naming the setting, the problem and what is accepted."""
    if not value:
        raise BackupError(f"{KEY_SETTING} is not set; it must be a base64-encoded 32-byte key; {KEY_HELP}.",
                          code="backup_key_missing", fields={KEY_SETTING: ["Not set."]})
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BackupError(f"{KEY_SETTING} is not valid base64; it must be a base64-encoded 32-byte key; {KEY_HELP}.",
                          code="backup_key_invalid", fields={KEY_SETTING: ["Not valid base64."]}) from exc
    if len(key) != 32:
        raise BackupError(f"{KEY_SETTING} decodes to {len(key)} bytes; AES-256 needs exactly 32; {KEY_HELP}.",
                          code="backup_key_invalid", fields={KEY_SETTING: [f"{len(key)} bytes, expected 32."]})
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key, so a reader can say "wrong key" before trying to decrypt."""
    return hashlib.sha256(b"clinpredict-audit-backup-key-id\x00" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    created_at: str
    first_seq: int
    last_seq: int
    count: int
    prev_hash: str  # hash of event first_seq - 1 (genesis for a backup starting at #1)
    head_hash: str  # hash of event last_seq: the chain head this file ends at
    chunks: int
    chunk_events: int
    key_id: str

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "cipher": CIPHER, **self.__dict__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        if data.get("format") != FORMAT or data.get("version") != 1 or data.get("cipher") != CIPHER:
            raise BackupError("Not a ClinPredict audit backup (version 1, AES-256-GCM).", code="backup_corrupt")
        try:
            manifest = cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise BackupError(f"The backup manifest is incomplete: {exc}.", code="backup_corrupt") from exc
        ints = (manifest.first_seq, manifest.last_seq, manifest.count, manifest.chunks, manifest.chunk_events)
        if not all(isinstance(v, int) and v >= 0 for v in ints) or manifest.chunk_events < 1 or (
                manifest.count != manifest.last_seq - manifest.first_seq + 1):
            raise BackupError("The backup manifest is inconsistent.", code="backup_corrupt")
        return manifest


def _aad(header_digest: bytes, index: int, last: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, 1 if last else 0)


def _row_line(row: dict[str, Any]) -> bytes:
    return (canonical_json(row) + "\n").encode("utf-8")


def write_backup(out: IO[bytes], *, rows: Iterable[dict[str, Any]], manifest: Manifest, key: bytes) -> int:
    """Write header and encrypted chunks to `out`; returns the number of events written. `rows` must yield exactly
    manifest.count events in sequence order (checked)."""
    header = MAGIC + json.dumps(manifest.to_json(), sort_keys=True).encode("utf-8") + b"\n"
    out.write(header)
    digest = hashlib.sha256(header).digest()
    aead = AESGCM(key)
    written, index, batch = 0, 0, bytearray()
    in_batch = 0

    def flush(last: bool) -> None:
        nonlocal index, batch, in_batch
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = aead.encrypt(nonce, bytes(batch), _aad(digest, index, last))
        out.write(struct.pack(">I", len(ciphertext)) + nonce + ciphertext)
        index, batch, in_batch = index + 1, bytearray(), 0

    for row in rows:
        expected = manifest.first_seq + written
        if row["seq"] != expected:
            raise BackupError(f"Backup source skipped from #{expected} to #{row['seq']}; nothing usable was written.",
                              code="backup_source_gap")
        batch += _row_line(row)
        written += 1
        in_batch += 1
        if in_batch == manifest.chunk_events and written < manifest.count:
            flush(last=False)
    if written != manifest.count:
        raise BackupError(f"Backup source yielded {written} events, expected {manifest.count}.",
                          code="backup_source_gap")
    flush(last=True)
    if index != manifest.chunks:
        raise BackupError(f"Wrote {index} chunks, manifest says {manifest.chunks}.", code="backup_source_gap")
    return written


def chunks_for(count: int, chunk_events: int) -> int:
    return max(1, -(-count // chunk_events))


def _read_exact(stream: IO[bytes], size: int, what: str, path: Path) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise BackupError(f"{path.name}: file ends inside {what} (truncated or corrupted); nothing was restored.",
                          code="backup_corrupt")
    return data


def read_manifest(path: Path) -> Manifest:
    with path.open("rb") as stream:
        return _read_header(stream, path)[0]


def _read_header(stream: IO[bytes], path: Path) -> tuple[Manifest, bytes]:
    magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise BackupError(f"{path.name} is not a ClinPredict audit backup (bad file header).", code="backup_corrupt")
    line = stream.readline(_MAX_MANIFEST_BYTES)
    if not line.endswith(b"\n"):
        raise BackupError(f"{path.name}: the manifest line is missing or too long.", code="backup_corrupt")
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise BackupError(f"{path.name}: the manifest is not valid JSON.", code="backup_corrupt") from exc
    if not isinstance(data, dict):
        raise BackupError(f"{path.name}: the manifest is not a JSON object.", code="backup_corrupt")
    return Manifest.from_json(data), hashlib.sha256(magic + line).digest()


def read_backup(path: Path, *, key: bytes) -> tuple[Manifest, Iterator[dict[str, Any]]]:
    """The manifest (read and checked against the key id now) and an iterator over the events, each chunk
    authenticated before its events are yielded. Any problem raises BackupError naming the file and the chunk."""
    stream = path.open("rb")
    try:
        manifest, digest = _read_header(stream, path)
        if manifest.key_id != key_id(key):
            raise BackupError(
                f"{path.name} was encrypted with key id {manifest.key_id}, but {KEY_SETTING} has key id "
                f"{key_id(key)}: wrong key; nothing was restored.", code="backup_wrong_key")
    except BaseException:
        stream.close()
        raise
    return manifest, _events(stream, path, manifest, digest, AESGCM(key))


def _events(stream: IO[bytes], path: Path, manifest: Manifest, digest: bytes,
            aead: AESGCM) -> Iterator[dict[str, Any]]:
    with stream:
        for index in range(manifest.chunks):
            (length,) = struct.unpack(">I", _read_exact(stream, 4, f"chunk {index + 1}", path))
            if not 16 <= length <= _MAX_CHUNK_BYTES:
                raise BackupError(f"{path.name}: chunk {index + 1} has an impossible length; the file is corrupted; "
                                  "nothing was restored.", code="backup_corrupt")
            nonce = _read_exact(stream, _NONCE_BYTES, f"chunk {index + 1}", path)
            ciphertext = _read_exact(stream, length, f"chunk {index + 1}", path)
            last = index == manifest.chunks - 1
            try:
                plaintext = aead.decrypt(nonce, ciphertext, _aad(digest, index, last))
            except InvalidTag as exc:
                raise BackupError(
                    f"{path.name}: chunk {index + 1} of {manifest.chunks} failed authentication: the key is wrong or "
                    "the file was corrupted or altered; nothing was restored.", code="backup_corrupt") from exc
            for line in plaintext.splitlines():
                row = json.loads(line)
                row["created_at"] = datetime.fromisoformat(row["created_at"])
                yield row
        if stream.read(1):
            raise BackupError(f"{path.name}: unexpected bytes after the last chunk; the file was altered; nothing "
                              "was restored.", code="backup_corrupt")
