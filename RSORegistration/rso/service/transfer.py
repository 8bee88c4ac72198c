"""Files inside the protocol: chunked base64 ``upload`` and ``download``, checked with SHA-256.

A worker on another machine shares no file system with its client, so images go to it and
results come back as protocol lines (rso.service.protocol: CHUNK_BYTES of file per line, far below
the 1 MB line limit). Both ends are here, so the framing is defined once:

* worker side: ``receive_chunk`` appends to a hidden partial file and, on the last chunk (the one
  that carries the whole file's SHA-256), checks it and renames it into place; ``read_chunk``
  reads one chunk and, at the end of the file, adds the file's SHA-256.
* client side: ``upload_file`` and ``download_file`` loop over the chunks through any ``call``
  (``WorkerClient.call``); a download is written to a temporary name and renamed only once its
  SHA-256 matches, so a broken transfer never leaves a half file under the real name.

The client side imports nothing heavy (the Slicer GUI uses it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from rso.errors import InputError
from rso.service.protocol import CHUNK_BYTES

MAX_UPLOAD_BYTES = 8 << 30  # one input image; a larger upload is refused rather than filling the disk


# ---------------------------------------------------------------------------------- worker side
def receive_chunk(folder: Path, name: str, offset: int, data: str, sha256: str | None = None) -> dict:
    """Write one upload chunk of ``name`` at byte ``offset``; the chunk with ``sha256`` completes the file.

    Returns {"name", "received" (bytes so far), "complete"}. A chunk out of order, bad base64 or a
    checksum that does not match is an InputError; a bad checksum discards what had arrived.
    """
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{name}.part"
    arrived = part.stat().st_size if offset and part.is_file() else 0
    if offset != arrived:
        raise InputError(
            f"upload {name}: a chunk at byte {offset}, but {arrived} bytes have arrived; "
            "send the chunks in order, starting at offset 0"
        )
    try:
        chunk = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"upload {name}: the chunk at byte {offset} is not valid base64") from None
    received = offset + len(chunk)
    if received > MAX_UPLOAD_BYTES:
        part.unlink(missing_ok=True)
        raise InputError(f"upload {name}: over {MAX_UPLOAD_BYTES >> 30} GB; that is no single image")
    with open(part, "r+b" if offset else "wb") as handle:
        handle.seek(offset)
        handle.write(chunk)
        handle.truncate()
    if sha256 is None:
        return {"name": name, "received": received, "complete": False}
    from rso.core.imageio import file_sha256

    actual = file_sha256(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise InputError(
            f"upload {name}: SHA-256 mismatch after {received} bytes (sent {sha256[:12]}..., "
            f"arrived {actual[:12]}...); the upload was discarded: send it again"
        )
    os.replace(part, folder / name)
    return {"name": name, "received": received, "complete": True}


def read_chunk(path: Path, file: str, offset: int, chunk_bytes: int = CHUNK_BYTES) -> dict:
    """{"file", "offset", "size", "data" (base64), "eof"}, plus "sha256" of the whole file with the last
    chunk."""
    size = path.stat().st_size
    if offset > size:
        raise InputError(f"download {file}: offset {offset} is past the end of the file ({size} bytes)")
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(chunk_bytes)
    reply = {
        "file": file,
        "offset": offset,
        "size": size,
        "data": base64.b64encode(data).decode("ascii"),
        "eof": offset + len(data) >= size,
    }
    if reply["eof"]:
        from rso.core.imageio import file_sha256

        reply["sha256"] = file_sha256(path)
    return reply


# ---------------------------------------------------------------------------------- client side
def upload_file(
    call: Callable[..., dict], path: str | os.PathLike, name: str, chunk_bytes: int = CHUNK_BYTES
) -> dict:
    """Send a file as ``name`` through ``call("upload", ...)``, chunk by chunk; returns the last reply."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file: upload a single image file (NIfTI, NRRD or MHA)")
    size = path.stat().st_size
    digest = hashlib.sha256()
    offset = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_bytes)
            digest.update(chunk)
            last = offset + len(chunk) >= size
            reply = call(
                "upload",
                name=name,
                offset=offset,
                data=base64.b64encode(chunk).decode("ascii"),
                sha256=digest.hexdigest() if last else None,
            )
            offset += len(chunk)
            if last:
                return reply


def download_file(call: Callable[..., dict], file: str, dest: str | os.PathLike) -> Path:
    """Fetch a session file (e.g. "current/warped.nii") through ``call("download", ...)`` into ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")  # open(): the usual permissions
    digest = hashlib.sha256()
    try:
        with open(tmp, "xb") as handle:
            reply = {"eof": False}
            while not reply["eof"]:
                reply = call("download", file=file, offset=handle.tell())
                data = base64.b64decode(reply["data"])
                if not data and not reply["eof"]:
                    raise InputError(f"download {file}: the worker sent an empty chunk before the end")
                handle.write(data)
                digest.update(data)
        if digest.hexdigest() != reply.get("sha256"):
            raise InputError(
                f"download {file}: SHA-256 mismatch (the file changed on the worker, or bytes were "
                "lost); download it again"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
