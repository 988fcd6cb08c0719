"""File helpers shared by every layer (torch-free): atomic writes and checksums.

Every file vireid writes in place (checkpoints, weights, feature files, configs,
logs) goes through :func:`atomic_path`: a temporary file in the same folder,
``.<name>.<host>.<pid>.<random>.tmp``, renamed over the target when complete, so a
crash leaves the old file or the new one, never a torn one. The host and pid in the
name let :func:`remove_stale_temporaries` delete what killed writers left behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HOST", "atomic_path", "fsync_path", "remove_stale_temporaries", "sha256_file", "write_sha256"]

HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
"""This machine, as it appears in temporary file names."""

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")
_OLD_TEMPORARY = re.compile(r"^\.(?P<name>.+\.pt)\.[A-Za-z0-9_]{8}\.tmp$")
"""Temporary checkpoint files of earlier versions (``tempfile.mkstemp``'s eight characters)."""


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (a rename in it) to disk, where the platform allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _out_of_space(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    # torch's zip writer reports a failed write as a RuntimeError without the errno
    if isinstance(err, RuntimeError) and "write" in str(err).lower():
        try:
            return shutil.disk_usage(folder).free < (64 << 20)
        except OSError:
            return False
    return False


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = False,
                what: str = "file") -> Iterator[Path]:
    """A temporary file name beside ``path`` to write to; when the block succeeds it is
    renamed over ``path``, when it fails it is removed and ``path`` keeps its content.
    ``durable``: the data and the rename are flushed to disk (checkpoints). A full disk
    is reported as such, naming ``path`` (and saying the previous ``what`` is kept)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(
        f".{target.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        if durable:
            fsync_path(temporary)
        os.replace(temporary, target)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        if _out_of_space(err, target.parent):
            kept = f" (the previous {what} is kept)" if target.exists() else ""
            raise OSError(errno.ENOSPC,
                          f"no space left on device: cannot write {target}{kept}") from None
        raise
    if durable:
        fsync_path(target.parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. no permission: it exists
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` that killed processes left in
    ``folder``; files of a live process on this host (or of another host) are kept.
    Returns the removed paths."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match:
            if match["host"] != HOST or _alive(int(match["pid"])):
                continue
        elif not _OLD_TEMPORARY.match(entry.name):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_sha256(path: str | os.PathLike[str]) -> Path:
    """Write ``<path>.sha256`` (``sha256sum`` format) beside ``path``; return it."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    with atomic_path(sidecar) as tmp:
        tmp.write_text(f"{sha256_file(path)}  {path.name}\n", encoding="utf-8")
    return sidecar
