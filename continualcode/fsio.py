"""Durable file writes: the one write-temp + fsync + rename helper, and the one directory fsync.

Every file the package writes whole (tool writes, manifests, heatmaps, plots, benchmark results,
checkpoints' metadata) goes through `atomic_write`: a temp file in the target's directory named
`.cctmp.<pid>.<random>` is written, fsynced and `os.replace`d over the target, then the directory
entry is fsynced.  A kill -9 at any point leaves the complete old file or the complete new one,
never a mix; the temp file a killed writer leaves is recognisable by its prefix and pid
(`remove_orphans`).  `atomic_dir` does the same for a whole directory (an adapter checkpoint):
the final path is a symlink swapped by one rename.  Append-only logs (the journal) do not use
these: they append one fsynced line per event.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".cctmp."  # atomic-write temp files: .cctmp.<pid>.<random>


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it (from /proc; 0o022 where unreadable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: Path, data: bytes | str, *, keep_mode: bool = True) -> Path:
    """Write `data` to `path` all-or-nothing (see the module docstring); returns `path`.

    The new file keeps the old file's permission bits when `keep_mode` and one existed, else it
    gets 0o666 minus the umask, as a plain `open(path, "w")` would.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    mode = 0o666 & ~current_umask()
    if keep_mode:
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(path.stat().st_mode)
    tmp = parent / f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(parent)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(directory: Path) -> None:
    """Delete temp files left in `directory` by writers that died mid-write (kill -9)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        pid = name[len(TEMP_PREFIX) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(directory / name)


def _fsync_files(d: Path) -> None:
    for f in d.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def previous_of(final: Path) -> Path:
    """Where `atomic_dir(final, keep_previous=True)` keeps the directory it replaced."""
    return final.with_name(f"{final.name}.prev")


@contextlib.contextmanager
def atomic_dir(final: Path, *, keep_previous: bool = False) -> Iterator[Path]:
    """Yield a temp dir next to `final`; on success `final` becomes a symlink to it, swapped in
    with one atomic rename, so `final` is always the complete old or the complete new directory
    (a kill -9 at any point leaves one of them).  The previous target is removed afterwards, or,
    with `keep_previous`, kept as `previous_of(final)` (the one kept before it is removed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        _fsync_files(tmp)
        fsync_dir(tmp)
        previous = final.resolve() if final.is_symlink() else None
        if final.exists() and not final.is_symlink():  # a plain directory (copied in by hand): set it aside
            os.replace(final, final.with_name(f".{final.name}.plain-{os.getpid()}"))
        link = final.with_name(f".{final.name}.link-{os.getpid()}")
        link.unlink(missing_ok=True)
        os.symlink(tmp.name, link)
        os.replace(link, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if previous is None or previous.parent != final.parent or previous == tmp:
        return
    if not keep_previous:
        shutil.rmtree(previous, ignore_errors=True)
        return
    prev = previous_of(final)
    older = prev.resolve() if prev.is_symlink() else None
    link = final.with_name(f".{prev.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    os.symlink(previous.name, link)
    os.replace(link, prev)
    fsync_dir(final.parent)
    if older is not None and older.parent == final.parent and older not in (previous, tmp):
        shutil.rmtree(older, ignore_errors=True)
