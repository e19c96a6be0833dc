"""Run directories on object stores (gs://, s3://): a URL stays a URL, never a local folder
named after the scheme.

A run whose output.dir is a URL writes its checkpoints straight to `URL/checkpoints` through
Orbax (every process of a pod writes its own shards there: the shared place a multi-host
checkpoint needs). Everything else (run.json, metrics.jsonl, evaluations, plots, the HF
export) is written into a local staging folder, the code that writes it unchanged, and
copied up by process 0 after every checkpoint and when the command ends: a run resumed
from the URL finds its metrics as they were at its last checkpoint. `--resume` first copies
the URL's files (all but checkpoints/) down into the staging folder.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# the fsspec back-end etils.epath needs per scheme (the pip package that provides it)
BACKENDS = {"gs": ("gcsfs", "gcsfs (pip install 'jaxunlearn[gcs]')"), "s3": ("s3fs", "s3fs (pip install s3fs)")}
CHECKPOINTS = "checkpoints"  # folders Orbax writes at the URL itself (any depth): never staged, pulled or pushed


class StorageError(ConfigError):
    """A remote output location that cannot be used (unknown scheme, missing back-end)."""


def is_remote(path) -> bool:
    """A URL (gs://, s3://, ...); None and local paths are not."""
    return path is not None and bool(URL.match(str(path)))


def remote_path(url, setting: str = "output.dir"):
    """An etils.epath.Path for `url`, after checking its scheme has a back-end installed."""
    url = str(url)
    scheme = URL.match(url).group(1).lower()
    if scheme not in BACKENDS:
        raise StorageError(
            f"{setting}={url}: {scheme}:// is not a supported store; use gs:// or s3://, or a local or mounted "
            "directory (a network file system, gcsfuse)"
        )
    module, package = BACKENDS[scheme]
    if importlib.util.find_spec(module) is None:
        raise StorageError(f"{setting}={url}: writing to {scheme}:// needs {package}; install it or write locally")
    os.environ.setdefault("EPATH_USE_TF", "false")  # fsspec, not TensorFlow's gfile, when both are installed
    from etils import epath

    return epath.Path(url)


def check_writable_url(url, setting: str = "output.dir"):
    """Write and delete one object at `url`: a bucket that cannot be written fails now, not
    when the results are copied up."""
    probe = url / f".jaxunlearn-write-check-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except Exception as e:  # each store's client raises its own types (gcsfs: OSError, HttpError...)
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise StorageError(
            f"{setting} {url} cannot be written ({type(e).__name__}: {first}); check the bucket name, the "
            "credentials (gcloud auth application-default login) and the permissions, or write locally"
        ) from None
    return url


def home(path):
    """Where `path` lives for good: its URL when it lies in a staging folder, else `path`
    itself. Checkpoints and the paths a run reports use it."""
    mirror, rel = _staging_of(path)
    if mirror is None:
        return path
    return mirror.url / rel if rel else mirror.url


def _staging_of(path):
    """(the Mirror whose staging folder holds `path`, the relative name) or (None, None)."""
    path = Path(path).absolute()
    for local, mirror in _MIRRORS.items():
        if path == local or local in path.parents:
            return mirror, path.relative_to(local).as_posix() if path != local else ""
    return None, None


class Mirror:
    """A local staging folder kept equal to a URL's files (checkpoints folders excepted)."""

    def __init__(self, url, local: Path):
        self.url, self.local = url, Path(local)
        self.sent: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns) as copied

    def pull(self) -> int:
        """Copy the URL's files down (what --resume needs); returns how many."""
        names = remote_files(self.url, skip=CHECKPOINTS)
        for rel in names:
            target = self.local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with (self.url / rel).open("rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
            self.sent[rel] = _stamp(target)
        return len(names)

    def push(self) -> int:
        """Copy new and changed files up, oldest first (summary.json, written last, arrives
        last), and remove from the URL what this process copied or pulled and the staging
        folder no longer holds (an export replaced by a smaller one). Returns files copied."""
        here = {}
        for p in self.local.rglob("*"):
            if p.is_file() and CHECKPOINTS not in p.relative_to(self.local).parts[:-1]:
                here[p.relative_to(self.local).as_posix()] = _stamp(p)
        changed = sorted((stamp[1], rel) for rel, stamp in here.items() if self.sent.get(rel) != stamp)
        for _, rel in changed:
            target = self.url / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(self.local / rel, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
            self.sent[rel] = here[rel]
        for rel in sorted(set(self.sent) - set(here)):
            with contextlib.suppress(FileNotFoundError):
                (self.url / rel).unlink()
            del self.sent[rel]
        return len(changed)


def remote_files(url, skip: str | None = None) -> list[str]:
    """Names of the files under the URL `url`, relative to it, leaving folders named `skip`
    unread at any depth (a continual run's task_*/checkpoints too: a store lists folder by
    folder, and checkpoints hold thousands of files)."""
    names, folders = [], [(url, "")] if url.exists() else []
    while folders:
        folder, prefix = folders.pop()
        for p in folder.iterdir():
            if p.is_dir():
                if p.name != skip:
                    folders.append((p, f"{prefix}{p.name}/"))
            else:
                names.append(prefix + p.name)
    return sorted(names)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def push_if_staged(path) -> None:
    """Copy the staging folder holding `path` up to its URL (process 0; no-op when local)."""
    import jax

    mirror, _ = _staging_of(path)
    if mirror is not None and jax.process_index() == 0:
        log.info("copied %d file(s) to %s", mirror.push(), mirror.url)


_MIRRORS: dict[Path, Mirror] = {}  # staging folder -> its Mirror, for every staged directory open here


@contextlib.contextmanager
def staged(url, pull: bool, push_on_failure: bool, staging_root: str | None = None):
    """Yield a fresh local staging folder for the URL `url` (an epath.Path). `pull`: copy the
    URL's files into it first (every process: they all read the run's state). When the block
    ends, process 0 copies the folder up (also on failure with `push_on_failure`: a training
    run's metrics belong beside its checkpoints) and the folder is removed. The caller has
    checked that `url` can be written (paths.check_writable_dir / check_writable_url)."""
    import jax

    root = Path(staging_root or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(prefix="jaxunlearn-staging-", dir=root)).absolute()
    mirror = Mirror(url, local)
    _MIRRORS[local] = mirror
    try:
        if pull:
            log.info("copied %d file(s) from %s into %s", mirror.pull(), url, local)
        ok = False
        try:
            yield local
            ok = True
        finally:
            if (ok or push_on_failure) and jax.process_index() == 0:
                try:
                    log.info("copied %d file(s) to %s", mirror.push(), url)
                except Exception:
                    if ok:
                        raise
                    log.exception("could not copy the failed run's files to %s", url)  # the run's error follows
    finally:
        del _MIRRORS[local]
        shutil.rmtree(local, ignore_errors=True)


@contextlib.contextmanager
def written_locally(where, staging_root: str | None = None, pull: bool = False, push_on_failure: bool = False):
    """`where` itself when it is local; for a URL, a staging folder copied up to it (staged)."""
    if not is_remote(where):
        yield where
        return
    with staged(where, pull, push_on_failure, staging_root) as local:
        yield local


def remove_tree(path, ignore_errors: bool = False) -> None:
    """shutil.rmtree for a local folder, the store's own recursive delete for a URL."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    try:
        path.rmtree(missing_ok=True)
    except Exception:
        if not ignore_errors:
            raise


def stages_url_output(command: str):
    """For a pipeline `f(cfg, ..., out_dir=None, ...)` that writes its results when it ends
    (eval, attack, flag, chen): called without out_dir while output.dir is a URL, it writes
    into a staging folder that is copied up when it returns (not after a failure)."""

    def wrap(f):
        signature = inspect.signature(f)

        @functools.wraps(f)
        def run(cfg, *args, **kwargs):
            import jax

            bound = signature.bind(cfg, *args, **kwargs)
            if bound.arguments.get("out_dir") is not None or not is_remote(cfg.output.dir):
                return f(*bound.args, **bound.kwargs)
            url = cfg.output_dir(command)
            if jax.process_index() == 0:
                check_writable_url(url)  # before the work, not when its results are copied up
            with written_locally(url, cfg.output.staging_dir) as local:
                bound.arguments["out_dir"] = local
                return f(*bound.args, **bound.kwargs)

        return run

    return wrap
