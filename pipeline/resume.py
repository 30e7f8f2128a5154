"""Resumable stage outputs: units of work that are committed atomically and skipped when already done.

A stage splits its output into units (the faces stage: one folder per track, grouped by video; the frames
stage: one frame-index file per video; features: one Parquet file per track). A folder unit is written into
a hidden staging folder next to its final place and renamed into place only when complete, together with
`unit.json` holding the unit's key; a single Parquet file carries its key in its schema metadata and is
renamed into place the same way. The key is a sha256 of everything that decides the unit's content
(input file hashes, params, a fingerprint of the code). A rerun after a crash skips the units whose key
matches, recomputes the others and prunes everything else, so the output equals a fresh run's, byte for
byte. Nothing wall-clock goes into a key or a unit file.

Crash safety also needs the processes that write units to die with the stage. The lifeline helpers here
are Linux mechanisms (the pipeline's machines run Linux; elsewhere they do nothing):
- `parent_death_preexec`: a `preexec_fn` making a subprocess get SIGKILL when the thread that started it
  ends (`prctl(PR_SET_PDEATHSIG)`);
- `watch_parent` / `exit_with_parent`: a daemon thread that polls `os.getppid()` and, once the parent has
  changed (it died, the process was re-parented), kills this process's children and `os._exit`s;
- `parent_alive`: checked right before a commit, so a unit is never renamed into place after the process
  that asked for it has gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

UNIT_FILE = "unit.json"
STAGING_SUFFIX = ".tmp"
POLL_SECONDS = 0.2  # how often a lifeline looks at its parent: the bound on writes after a parent's death
_CHUNK = 1 << 20

# ---- keys -----------------------------------------------------------------------------------------------


def file_digest(path: Path | str) -> str:
    """sha256 of a file's content (streamed, so a multi-GB video costs memory of one chunk)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_fingerprint(*modules: str) -> str:
    """sha256 of the `.py` source of the named modules and packages (a package: all its files, recursively).

    Paths enter relative to each module's own folder, so two checkouts of one commit agree.
    """
    digest = hashlib.sha256()
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no source for module '{name}'")
        base = Path(spec.origin).parent
        # A package: every file below it, in a fixed order; a module: its one file.
        files = sorted(base.rglob("*.py")) if spec.submodule_search_locations else [Path(spec.origin)]
        for path in files:
            digest.update(f"{name}:{path.relative_to(base).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def unit_key(inputs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a unit's inputs (keys sorted, so dict order does not matter)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_key(folder: Path | str) -> str | None:
    """The key committed with a unit folder, or None (no unit file, or an unreadable one)."""
    try:
        return json.loads((Path(folder) / UNIT_FILE).read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_done(folder: Path | str, key: str, files: Iterable[Path | str] = ()) -> bool:
    """Whether `folder` holds a committed unit with this key, and each of `files` (full paths) exists."""
    return read_key(folder) == key and all(Path(path).is_file() for path in files)


# ---- atomic commits -------------------------------------------------------------------------------------


def staging_path(final: Path | str) -> Path:
    """The hidden sibling a unit is written into: `<parent>/.<name>.tmp`."""
    final = Path(final)
    return final.with_name(f".{final.name}{STAGING_SUFFIX}")


def fresh_staging(final: Path | str) -> Path:
    """An empty staging folder for `final` (leftovers of a killed run are removed first)."""
    staging = staging_path(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def commit(staging: Path | str, final: Path | str, key: str | None) -> None:
    """Write `unit.json` into the finished staging folder and rename it to `final`.

    The rename is the commit: `final` is either the old unit or the complete new one, never half of one.
    Replacing an existing `final` takes two renames; a crash between them leaves no `final` (the unit is
    recomputed) and a hidden leftover that `prune` removes.

    Args:
        staging: the complete unit, on the same filesystem as `final`.
        final: where the unit lives.
        key: the unit's key (None: commit without a unit file, e.g. outside a resumable stage).
    """
    staging, final = Path(staging), Path(final)
    if key is not None:
        (staging / UNIT_FILE).write_text(json.dumps({"key": key}, indent=1, sort_keys=True) + "\n")
    if not parent_alive():
        # The stage that asked for this unit is gone: nobody may write into its output any more.
        os._exit(1)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old)
    else:
        os.rename(staging, final)


def prune(out_dir: Path | str, keep: Iterable[str]) -> list[str]:
    """Delete every entry of `out_dir` not named in `keep` (stale units, staging leftovers, old files).

    Returns:
        The names deleted, sorted.
    """
    out_dir = Path(out_dir)
    keep = set(keep)
    removed = []
    for path in sorted(out_dir.iterdir()):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path.name)
    return removed


# ---- single-file units: a Parquet file that carries its key -----------------------------------------

PARQUET_KEY = b"affectflow.unit_key"


def parquet_key(path: Path | str) -> str | None:
    """The key a Parquet unit was committed with, or None (absent, unreadable, or written without one)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    value = metadata.get(PARQUET_KEY)
    return value.decode() if value is not None else None


def commit_parquet(table: pa.Table, path: Path | str, key: str, **options: Any) -> None:
    """Write `table` with `key` in its schema metadata to a hidden sibling, then rename it to `path`.

    `options` go to `pyarrow.parquet.write_table` (compression, row_group_size, ...).
    """
    path = Path(path)
    staging = path.with_name(f".{path.name}{STAGING_SUFFIX}")
    metadata = {**(table.schema.metadata or {}), PARQUET_KEY: key.encode()}
    pq.write_table(table.replace_schema_metadata(metadata), staging, **options)
    if not parent_alive():
        os._exit(1)
    os.replace(staging, path)


# ---- lifelines ------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_watched_parent: int | None = None  # the parent this process must not outlive (None: not watching)


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


def parent_death_preexec() -> Callable[[], None] | None:
    """A `subprocess.Popen(preexec_fn=...)` that ties the child's life to the calling thread (Linux).

    The kernel sends SIGKILL to the child when the thread that forked it ends, including when the whole
    process is SIGKILLed: call it from a thread that lives as long as the child should (the main thread).
    A child whose parent already died before the setting took effect exits at once.

    Returns:
        The function, or None where `prctl` is unavailable.
    """
    prctl = _libc_prctl()  # resolved before the fork: the child only calls it
    if prctl is None:
        return None
    parent, sigkill = os.getpid(), int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def children() -> list[int]:
    """Pids of this process's direct children (all threads), from /proc; empty where there is none."""
    pids: list[int] = []
    for path in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids.extend(int(pid) for pid in path.read_text().split())
    return sorted(set(pids))


def _die() -> None:
    for pid in children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(1)


def _watch(parent: int, stop: threading.Event) -> None:
    while not stop.wait(POLL_SECONDS):
        if os.getppid() != parent:
            _die()


def parent_alive() -> bool:
    """False once the parent this process watches (`watch_parent`, `exit_with_parent`) has gone."""
    return _watched_parent is None or os.getppid() == _watched_parent


def watch_parent(parent: int) -> None:
    """For the rest of this process's life: kill its children and exit once `parent` is no longer its parent.

    For pool workers (e.g. from an initializer; pass the pid the pool's owner had). A daemon thread polls
    every POLL_SECONDS; `prctl(PR_SET_PDEATHSIG)` is no substitute there, as it follows the parent *thread*
    that forked the worker, and a pool may fork from a short-lived thread.
    """
    global _watched_parent
    if os.getppid() != parent:
        _die()
    _watched_parent = parent
    threading.Thread(target=_watch, args=(parent, threading.Event()), name="lifeline", daemon=True).start()


@contextlib.contextmanager
def exit_with_parent() -> Iterator[None]:
    """While inside: kill this process's children and exit once its current parent dies.

    A stage's fan-out runs inside, so a SIGKILLed `dvc repro` takes the stage and its workers with it.
    """
    global _watched_parent
    previous, parent, stop = _watched_parent, os.getppid(), threading.Event()
    _watched_parent = parent
    thread = threading.Thread(target=_watch, args=(parent, stop), name="lifeline", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        _watched_parent = previous
