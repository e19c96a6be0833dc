"""Output paths checked before a command spends time: a run that cannot write its results
fails at once with one line, and OS write errors become messages that say what to do."""

from __future__ import annotations

import errno
import shutil
import uuid
from pathlib import Path

from .errors import JaxUnlearnError
from .storage import check_writable_url, is_remote


class OutputError(JaxUnlearnError):
    """An output path that cannot be written (a file in the way, read-only, full disk)."""


FIXES = {
    errno.ENOSPC: "free disk space or write elsewhere",
    errno.EDQUOT: "free quota or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "no permission; write elsewhere or fix the permissions",
    errno.EPERM: "no permission; write elsewhere or fix the permissions",
    errno.ENOTDIR: "a file stands where a directory is needed; remove it or write elsewhere",
    errno.EEXIST: "a file stands where a directory is needed; remove it or write elsewhere",
    errno.ENOENT: "a parent directory cannot be made there; write elsewhere",
}


def describe_os_error(e: OSError, what: str = "write") -> str:
    """One line: what failed, where, why, and the fix."""
    where = f" {e.filename}" if e.filename else ""
    fix = FIXES.get(e.errno, "check the path")
    return f"cannot {what}{where}: {e.strerror or e} ({fix})"


def check_writable_dir(path: str | Path, setting: str = "the output directory") -> Path:
    """Make sure `path` can be a directory we write into: create it (and parents) if missing,
    write and delete a probe file, and remove again whatever this check created. A URL
    (storage.py) is probed with one object written and deleted."""
    if is_remote(path):
        return check_writable_url(path, setting)
    path = Path(path)
    created = []
    try:
        missing = [p for p in [path, *path.parents] if not p.exists()]
        for p in reversed(missing):
            p.mkdir()
            created.append(p)
        if not path.is_dir():
            raise OutputError(f"{setting} {path} is a file, not a directory; remove it or choose another path")
        probe = path / f".jaxunlearn-write-check-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{setting}: {describe_os_error(e)}") from None
    finally:
        for p in reversed(created):
            shutil.rmtree(p, ignore_errors=True)
    return path
