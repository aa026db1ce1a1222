"""Every command reports a configuration error as one line naming the variable, and exits 2.

librdkafka refuses a configuration when the client is built, before it touches the network, so
these need no broker (the bootstrap address is never dialled). Exit 2 matters to a readiness
probe: ``govbus gate check`` exits 1 only to deny admission.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from govbus._cli import main
from govbus._librdkafka import build_client, config_variable, new_admin, new_consumer, new_producer
from govbus.errors import ConfigError

BAD_EXTRA = {"GOVBUS_KAFKA__EXTRA": '{"no.such.prop": 1}'}
GOVBUS = Path(sys.executable).with_name("govbus")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GOVBUS_")}
    return {**env, "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "GOVBUS_SINK__HEALTH__PORT": "0", **extra}


def _subprocess(argv: list[str], extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GOVBUS), *argv], env=_env(extra), capture_output=True, text=True, timeout=60)


def _main(argv: list[str], extra: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    for name, value in _env(extra).items():
        if name.startswith("GOVBUS_"):
            monkeypatch.setenv(name, value)
    return main(argv)


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("govbus: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["gate", "check"], id="gate-check"),
        pytest.param(["sink", "run", "null"], id="sink-run"),
    ],
)
def test_processes_exit_2_on_a_property_librdkafka_refuses(argv: list[str]) -> None:
    out = _subprocess(argv, BAD_EXTRA)
    assert out.returncode == 2, out.stderr
    line = _one_line_error(out.stderr)
    assert "GOVBUS_KAFKA__EXTRA" in line
    assert 'No such configuration property: "no.such.prop"' in line


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["topics", "create", "--dlq-for", "file", "--timeout", "5"], id="topics-create"),
        pytest.param(["lag"], id="lag"),
        pytest.param(["dlq", "inspect", "file"], id="dlq-inspect"),
        pytest.param(["dlq", "replay", "file", "--dry-run"], id="dlq-replay"),
    ],
)
def test_commands_exit_2_on_a_property_librdkafka_refuses(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(argv, BAD_EXTRA, monkeypatch) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "GOVBUS_KAFKA__EXTRA" in line
    assert "no.such.prop" in line


def test_a_sink_consumer_property_names_its_own_variable() -> None:
    out = _subprocess(
        ["sink", "run", "null"],
        {"GOVBUS_SINK__CONSUMER": '{"session.timeout.ms": "soon"}', "GOVBUS_SINK__DLQ__CREATE_TOPICS": "false"},
    )
    assert out.returncode == 2, out.stderr
    line = _one_line_error(out.stderr)
    assert "GOVBUS_SINK__CONSUMER" in line
    assert '"session.timeout.ms"' in line


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"GOVBUS_PRODUCER__DURABILTY": "disk"}, "GOVBUS_PRODUCER__DURABILTY"),
        ({"GOVBUS_PRODUCER__LIBRDKAFKA": "{bad json"}, "GOVBUS_PRODUCER__LIBRDKAFKA"),
    ],
)
def test_gate_check_exits_2_on_settings_it_cannot_read(extra: dict[str, str], variable: str) -> None:
    out = _subprocess(["gate", "check"], extra)
    assert out.returncode == 2, out.stderr
    assert _one_line_error(out.stderr).startswith(f"govbus: error: {variable}: ")


# ---- the helper every process builds its clients with ---------------------------------------


@pytest.mark.parametrize("build", [new_producer, new_consumer, new_admin])
def test_the_helper_turns_librdkafka_refusals_into_config_errors(
    build: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOVBUS_KAFKA__EXTRA", '{"no.such.prop": 1}')
    conf = {"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "no.such.prop": 1}
    with pytest.raises(ConfigError) as info:
        build(conf)  # type: ignore[operator]
    assert info.value.setting == "GOVBUS_KAFKA__EXTRA"
    assert "no.such.prop" in info.value.message


def test_the_helper_never_echoes_a_secret_value() -> None:
    def refuse(conf: dict[str, object]) -> None:
        raise KafkaException(
            KafkaError(KafkaError._INVALID_ARG, 'Invalid value "hunter2" for configuration property "sasl.password"')
        )

    with pytest.raises(ConfigError) as info:
        build_client(refuse, {}, "producer")
    assert info.value.setting == "GOVBUS_KAFKA__SASL_PASSWORD"
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("prop", "kind", "environ", "variable"),
    [
        ("linger.ms", "producer", {"GOVBUS_PRODUCER__LIBRDKAFKA": '{"linger.ms": -1}'}, "GOVBUS_PRODUCER__LIBRDKAFKA"),
        ("linger.ms", "producer", {"GOVBUS_KAFKA__EXTRA": '{"linger.ms": -1}'}, "GOVBUS_KAFKA__EXTRA"),
        ("x.y", "consumer", {"govbus_sink__consumer__X.Y": "1"}, "GOVBUS_SINK__CONSUMER__X.Y"),
        ("ssl.ca.location", "admin client", {}, "GOVBUS_KAFKA__SSL_CA_LOCATION"),
        ("x.y", "admin client", {}, "GOVBUS_KAFKA__EXTRA"),
        (None, "consumer", {}, "GOVBUS_SINK__CONSUMER or GOVBUS_KAFKA__EXTRA"),
    ],
)
def test_config_variable_names_where_a_property_came_from(
    prop: str | None, kind: str, environ: dict[str, str], variable: str
) -> None:
    assert config_variable(prop, kind, environ) == variable  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["sink", "run", "null"], id="sink-run"),
        pytest.param(["topics", "create"], id="topics-create"),
        pytest.param(["lag"], id="lag"),
        pytest.param(["dlq", "inspect", "file"], id="dlq-inspect"),
        pytest.param(["dlq", "replay", "file"], id="dlq-replay"),
        pytest.param(["schemas", "list"], id="schemas-list"),
    ],
)
def test_every_command_refuses_a_misspelt_variable(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(argv, {"GOVBUS_KAFKA__BOOTSTRAP_SERVER": "kafka:9092"}, monkeypatch) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert (
        "GOVBUS_KAFKA__BOOTSTRAP_SERVER: not a govbus setting (did you mean GOVBUS_KAFKA__BOOTSTRAP_SERVERS?)" in line
    )


def test_the_bus_refuses_a_misspelt_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from govbus.producer import Bus

    monkeypatch.setenv("GOVBUS_PRODUCER__DURABILTY", "disk")
    with pytest.raises(ConfigError, match="did you mean GOVBUS_PRODUCER__DURABILITY"):
        Bus(kafka={"bootstrap_servers": "127.0.0.1:1"}, producer={"spool_dir": str(tmp_path)}).close(timeout=0.1)
