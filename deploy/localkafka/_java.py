"""Find a Java runtime new enough for the broker and say plainly when there is none."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from govbus.errors import BrokerError

MIN_JAVA = 17  # Apache Kafka 4.x brokers require Java 17.
_VERSION = re.compile(r'version "([^"]+)"')


@dataclass(frozen=True)
class Java:
    path: Path
    version: str
    major: int


def parse_java_version(output: str) -> tuple[str, int] | None:
    """``(version, major)`` from ``java -version`` output, e.g. ``("17.0.15", 17)``, ``("1.8.0_292", 8)``."""
    match = _VERSION.search(output)
    if match is None:
        return None
    version = match.group(1)
    parts = re.findall(r"\d+", version)
    if not parts:
        return None
    # Java 8 and older call themselves "1.8"; from 9 on the first number is the major version.
    major = int(parts[1]) if parts[0] == "1" and len(parts) > 1 else int(parts[0])
    return version, major


def find_java(minimum: int = MIN_JAVA) -> Java:
    """The ``java`` from ``$JAVA_HOME/bin``, else from PATH; BrokerError if absent or older than ``minimum``."""
    java_home = os.environ.get("JAVA_HOME", "")
    if java_home:
        path = Path(java_home) / "bin" / "java"
        origin = f"JAVA_HOME={java_home}"
        if not os.access(path, os.X_OK):
            raise BrokerError(
                f"JAVA_HOME is set to {java_home}, but {path} is not an executable. Point JAVA_HOME at a "
                f"Java {minimum}+ installation (or unset it to use the java on PATH)."
            )
    else:
        found = shutil.which("java")
        if found is None:
            raise BrokerError(
                f"no Java runtime: JAVA_HOME is not set and 'java' is not on PATH. The local Apache Kafka "
                f"broker needs Java {minimum} or newer (e.g. 'apt-get install openjdk-17-jre-headless'), "
                "or set GOVBUS_TEST_BOOTSTRAP to use an existing cluster."
            )
        path, origin = Path(found), "PATH"
    return _probe(path, origin, minimum)


@functools.lru_cache(maxsize=8)
def _probe(path: Path, origin: str, minimum: int) -> Java:
    try:
        done = subprocess.run([str(path), "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run '{path} -version' (java from {origin}): {exc}") from exc
    output = (done.stderr + done.stdout).strip()
    parsed = parse_java_version(output)
    if done.returncode != 0 or parsed is None:
        raise BrokerError(
            f"'{path} -version' (java from {origin}) failed or printed no version "
            f"(exit code {done.returncode}): {output[:500]}"
        )
    version, major = parsed
    if major < minimum:
        raise BrokerError(
            f"Apache Kafka 4.x needs Java {minimum} or newer, but {path} (java from {origin}) is Java "
            f"{version}. Install a Java {minimum}+ runtime and put it first on PATH or set JAVA_HOME to it."
        )
    return Java(path=path, version=version, major=major)
