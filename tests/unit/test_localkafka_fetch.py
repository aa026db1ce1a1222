"""Fetching Kafka with mvn, and failing clearly, with a stand-in ``mvn`` on PATH (no network)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from govbus.errors import BrokerError
from govbus.localkafka._fetch import cached_libs, ensure_kafka

FAKE_MVN = """#!/bin/sh
PATH=/usr/bin:/bin
echo "$@" >> "$FAKE_MVN_LOG"
out=""
for a in "$@"; do
  case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; esac
done
mkdir -p "$out"
case "$FAKE_MVN_MODE" in
  fail)
    : > "$out/half-downloaded.jar"
    i=1
    while [ $i -le 40 ]; do echo "[INFO] progress line $i"; i=$((i+1)); done
    echo "[ERROR] Failed to execute goal: Could not resolve dependencies for project dev.govbus"
    exit 1;;
  no-kafka)
    : > "$out/slf4j-api-2.0.17.jar"
    exit 0;;
esac
base=https://repo.maven.apache.org/maven2/org/apache/kafka
echo "[INFO] Downloading from central: $base/kafka_2.13/4.4.0/kafka_2.13-4.4.0.jar"
echo "[INFO] Downloaded from central: $base/kafka_2.13/4.4.0/kafka_2.13-4.4.0.jar (6.4 MB at 9.1 MB/s)"
echo "[INFO] Downloaded from central: $base/kafka-clients/4.4.0/kafka-clients-4.4.0.jar (512 kB at 2 MB/s)"
printf jar > "$out/kafka_2.13-4.4.0.jar"
printf jar > "$out/kafka-clients-4.4.0.jar"
"""


@pytest.fixture
def mvn_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only a stand-in mvn that records its invocations in ``<bin>/calls``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN)
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_MVN_LOG", str(bin_dir / "calls"))
    monkeypatch.delenv("FAKE_MVN_MODE", raising=False)
    return bin_dir


def _calls(mvn_bin: Path) -> list[str]:
    log = mvn_bin / "calls"
    return log.read_text().splitlines() if log.exists() else []


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "kafka").iterdir() if not p.name.endswith(".lock"))


def test_first_fetch_resolves_into_the_cache_and_says_so(mvn_bin: Path, tmp_path: Path) -> None:
    cache, progress = tmp_path / "cache", io.StringIO()
    libs = ensure_kafka("4.4.0", cache=cache, progress=progress)

    assert libs == cache / "kafka" / "4.4.0" / "libs"
    assert sorted(j.name for j in libs.glob("*.jar")) == ["kafka-clients-4.4.0.jar", "kafka_2.13-4.4.0.jar"]
    marker = json.loads((cache / "kafka" / "4.4.0" / "COMPLETE.json").read_text())
    assert marker["version"] == "4.4.0"
    assert marker["jars"] == ["kafka-clients-4.4.0.jar", "kafka_2.13-4.4.0.jar"]
    assert _leftovers(cache) == ["4.4.0"]  # no staging directory left behind
    assert not (cache / "kafka" / "4.4.0" / "pom.xml").exists()

    (call,) = _calls(mvn_bin)
    assert "-B" in call.split()
    assert "dependency:copy-dependencies" in call
    assert "-DincludeScope=runtime" in call
    assert "-Dkafka.version=4.4.0" in call

    said = progress.getvalue()
    assert "govbus: fetching Apache Kafka 4.4.0" in said
    assert "dependency:copy-dependencies" in said  # the command, for whoever wants to rerun it
    assert "1 artifacts, 6.4 MB … kafka_2.13-4.4.0.jar" in said  # the first download shows at once
    assert "fetched Apache Kafka 4.4.0 in" in said
    assert "2 jars" in said
    assert "mvn downloaded 2 artifacts, 6.9 MB" in said


def test_second_start_runs_no_mvn(mvn_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = ensure_kafka("4.4.0", cache=cache, progress=None)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # mvn is not even findable now
    progress = io.StringIO()
    assert ensure_kafka("4.4.0", cache=cache, progress=progress) == first
    assert len(_calls(mvn_bin)) == 1
    assert progress.getvalue() == ""


def test_missing_mvn_names_the_command_and_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    cache = tmp_path / "cache"
    with pytest.raises(BrokerError) as caught:
        ensure_kafka("4.4.0", cache=cache, progress=None)
    message = str(caught.value)
    assert "'mvn' (Apache Maven) is not on PATH" in message
    assert "Install Maven" in message
    assert "mvn -B -f" in message
    assert "dependency:copy-dependencies" in message
    assert "-Dkafka.version=4.4.0" in message
    assert _leftovers(cache) == []
    assert cached_libs("4.4.0", cache) is None


def test_failing_mvn_reports_command_and_last_output_and_leaves_no_half_cache(
    mvn_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MVN_MODE", "fail")
    cache, progress = tmp_path / "cache", io.StringIO()
    with pytest.raises(BrokerError) as caught:
        ensure_kafka("4.4.0", cache=cache, progress=progress)
    message = str(caught.value)
    assert "mvn exited with code 1" in message
    assert "command: " in message
    assert "dependency:copy-dependencies" in message
    assert "Could not resolve dependencies" in message
    assert "progress line 40" in message
    assert "progress line 1\n" not in message  # only the tail, not the whole log
    assert "Could not resolve dependencies" in progress.getvalue()  # errors are echoed live too
    assert _leftovers(cache) == []
    assert cached_libs("4.4.0", cache) is None


def test_mvn_success_without_the_broker_jar_is_an_error(
    mvn_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MVN_MODE", "no-kafka")
    with pytest.raises(BrokerError, match=r"kafka_2\.13-4\.4\.0\.jar is not among the 1 jars"):
        ensure_kafka("4.4.0", cache=tmp_path / "cache", progress=None)
    assert _leftovers(tmp_path / "cache") == []


def test_a_killed_fetch_is_never_mistaken_for_a_cache(mvn_bin: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # What a fetch killed half way leaves: a staging directory, or (older layouts) libs without a marker.
    staging = cache / "kafka" / ".4.4.0.tmp-deadbeef" / "libs"
    staging.mkdir(parents=True)
    (staging / "kafka_2.13-4.4.0.jar").write_text("truncated")
    unmarked = cache / "kafka" / "4.4.0" / "libs"
    unmarked.mkdir(parents=True)
    (unmarked / "kafka_2.13-4.4.0.jar").write_text("truncated")
    assert cached_libs("4.4.0", cache) is None

    libs = ensure_kafka("4.4.0", cache=cache, progress=None)
    assert (libs / "kafka_2.13-4.4.0.jar").read_text() == "jar"
    assert _leftovers(cache) == ["4.4.0"]
    assert len(_calls(mvn_bin)) == 1


def test_a_changed_pom_invalidates_the_cache(mvn_bin: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ensure_kafka("4.4.0", cache=cache, progress=None)
    marker = cache / "kafka" / "4.4.0" / "COMPLETE.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "pom_sha256": "from an older pom.xml"}))
    assert cached_libs("4.4.0", cache) is None
    ensure_kafka("4.4.0", cache=cache, progress=None)
    assert len(_calls(mvn_bin)) == 2
    assert cached_libs("4.4.0", cache) is not None
    assert _leftovers(cache) == ["4.4.0"]
