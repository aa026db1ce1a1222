"""Resolve the Apache Kafka broker's jars from Maven Central with ``mvn``, once per user and version.

The result lives in ``<cache>/kafka/<version>/libs``. It is built in a temporary sibling directory
and renamed into place together with a completion marker, so a fetch that is killed half way
leaves nothing a later run could mistake for a complete set of jars.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from govbus.errors import BrokerError

from ._paths import kafka_home

KAFKA_VERSION = "4.4.0"
"""The Apache Kafka version the local broker runs unless told otherwise (must match pom.xml's default)."""

POM = Path(__file__).with_name("pom.xml")
_MARKER = "COMPLETE.json"
_FETCH_TIMEOUT = 20 * 60.0
_TAIL_LINES = 25
# "Downloaded from central: https://…/kafka_2.13-4.4.0.jar (6.4 MB at 9.1 MB/s)"
_DOWNLOADED = re.compile(r"Downloaded from [^:]+: (\S+) \(([\d.]+) (B|kB|KB|MB|GB)")
_SIZE = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def libs_dir(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path:
    return kafka_home(version, cache) / "libs"


def cached_libs(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path | None:
    """The jars of ``version`` if a complete fetch made with the current pom.xml is cached, else None."""
    home = kafka_home(version, cache)
    try:
        marker = json.loads((home / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("pom_sha256") != _pom_digest():
        return None
    return home / "libs"


def ensure_kafka(
    version: str = KAFKA_VERSION, *, cache: Path | None = None, progress: TextIO | None = sys.stderr
) -> Path:
    """Return the directory of jars for ``version``, fetching it with ``mvn`` if it is not cached yet.

    A cached copy is used without running mvn (no network). ``progress`` receives a few
    human-readable lines while a fetch runs (None for silence).
    """
    found = cached_libs(version, cache)
    if found is not None:
        return found
    home = kafka_home(version, cache)
    home.parent.mkdir(parents=True, exist_ok=True)
    with _locked(home.parent / f".{version}.lock", progress):
        # Another process may have finished the same fetch while we waited for the lock.
        found = cached_libs(version, cache)
        if found is not None:
            return found
        for stale in home.parent.glob(f".{version}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a fetch that was killed; we hold the lock
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=home.parent))
        try:
            _fetch_into(staging, version, progress)
            _replace(home, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home / "libs"


def _fetch_into(staging: Path, version: str, progress: TextIO | None) -> None:
    mvn = shutil.which("mvn")
    # A copy of the pom keeps mvn's scratch files out of the source tree or site-packages.
    pom = staging / "pom.xml"
    shutil.copyfile(POM, pom)
    libs = staging / "libs"
    command = [
        mvn or "mvn",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
        f"-Dkafka.version={version}",
    ]
    shown = shlex.join(command)
    if mvn is None:
        raise BrokerError(
            "cannot fetch Apache Kafka: 'mvn' (Apache Maven) is not on PATH. It is needed once per "
            f"Kafka version to resolve the broker from Maven Central into {staging.parent / version}. "
            "Install Maven 3.8+ (e.g. 'apt-get install maven'), or point GOVBUS_TEST_BOOTSTRAP at an "
            f"existing cluster. The command would have been: {shown}"
        )
    _say(progress, f"fetching Apache Kafka {version} (kafka_2.13 and its dependencies) from Maven Central")
    _say(progress, f"  into {staging.parent / version}; one time only, about 45 MB of jars")
    _say(progress, f"  $ {shown}")
    started = time.monotonic()
    tail, downloads, downloaded_bytes = _run_mvn(command, staging, progress)
    jars = sorted(libs.glob("*.jar")) if libs.is_dir() else []
    if not any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
        raise BrokerError(
            f"mvn finished but kafka_2.13-{version}.jar is not among the {len(jars)} jars it produced.\n"
            f"command: {shown}\nlast mvn output:\n" + "\n".join(tail)
        )
    size = sum(j.stat().st_size for j in jars)
    source = (
        f"mvn downloaded {downloads} artifacts, {downloaded_bytes / 1e6:.1f} MB"
        if downloads
        else "nothing downloaded: all from the local Maven repository"
    )
    _say(
        progress,
        f"fetched Apache Kafka {version} in {time.monotonic() - started:.1f} s: "
        f"{len(jars)} jars, {size / 1e6:.0f} MB; {source}",
    )
    (staging / _MARKER).write_text(
        json.dumps(
            {
                "version": version,
                "pom_sha256": _pom_digest(),
                "jars": [j.name for j in jars],
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
    )
    pom.unlink()


def _run_mvn(
    command: list[str], cwd: Path, progress: TextIO | None, what: str = "Apache Kafka"
) -> tuple[deque[str], int, float]:
    """Run mvn, echo a compact account of it, return (last lines, downloads, bytes downloaded).
    Also used by the tests to fetch Apache Avro for Java (``what`` names it in errors)."""
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    downloads, downloaded_bytes, last_report = 0, 0.0, float("-inf")
    live = progress is not None and progress.isatty()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    timed_out = threading.Event()

    def _expire() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(_FETCH_TIMEOUT, _expire)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail.append(line)
            match = _DOWNLOADED.search(line)
            if match:
                downloads += 1
                downloaded_bytes += float(match.group(2)) * _SIZE[match.group(3)]
                # One status line every few seconds: enough to see it is alive, not a wall of URLs.
                now = time.monotonic()
                if live or now - last_report >= 3.0:
                    last_report = now
                    name = match.group(1).rsplit("/", 1)[-1]
                    status = f"  {downloads} artifacts, {downloaded_bytes / 1e6:.1f} MB … {name}"
                    if live and progress is not None:
                        progress.write(f"\r\033[K{status[:110]}")
                        progress.flush()
                    else:
                        _say(progress, status)
            elif line.startswith(("[ERROR]", "[WARNING]")) and progress is not None:
                if live:
                    progress.write("\r\033[K")
                _say(progress, f"  mvn: {line}")
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        watchdog.cancel()
        if live and progress is not None:
            progress.write("\r\033[K")
            progress.flush()
    if code != 0:
        why = f"was killed after {_FETCH_TIMEOUT:.0f} s" if timed_out.is_set() else f"exited with code {code}"
        raise BrokerError(
            f"fetching {what} with mvn failed: mvn {why}.\ncommand: {shlex.join(command)}\n"
            "last mvn output:\n" + "\n".join(tail)
        )
    return tail, downloads, downloaded_bytes


def _replace(home: Path, staging: Path) -> None:
    """Move ``staging`` to ``home`` in one rename, moving aside whatever was there (an older fetch)."""
    old: Path | None = None
    if home.exists():
        old = home.with_name(f".{home.name}.old-{time.monotonic_ns()}")
        home.rename(old)
    staging.rename(home)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path, progress: TextIO | None) -> Iterator[None]:
    """Serialize fetches of one version across processes (parallel test workers, CLI and tests)."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"waiting for another process that is fetching Apache Kafka ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _say(progress: TextIO | None, message: str) -> None:
    if progress is not None:
        progress.write(f"govbus: {message}\n")
        progress.flush()
