"""The sink SPI: structural typing, the base class defaults, and loading sinks by name."""

from __future__ import annotations

import pytest

from govbus.consumers import (
    OK,
    Batch,
    Rejected,
    RetryLater,
    Sink,
    SinkBase,
    SinkError,
    SinkNotFoundError,
    available_sinks,
    create_sink,
    load_factory,
)
from govbus.consumers.sinks._file import FileSink
from govbus.consumers.sinks._http import HttpSink
from govbus.consumers.sinks._null import NullSink
from govbus.consumers.sinks._stdout import StdoutSink
from govbus.errors import ConfigError, GovbusError


class ThirdPartySink:
    """Imports nothing from govbus: the protocol is structural."""

    def __init__(self, url: str = "x") -> None:
        self.url = url

    def open(self, context: object) -> None: ...

    def write(self, batch: object) -> None:
        return None

    def flush(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class HalfSink:
    def write(self, batch: object) -> None:
        return None


def test_protocol_is_structural_and_base_class_fills_the_hooks() -> None:
    assert isinstance(ThirdPartySink(), Sink)
    assert not isinstance(HalfSink(), Sink)

    class Mine(SinkBase):
        def write(self, batch: Batch) -> None:
            return None

    assert isinstance(Mine(), Sink)
    with pytest.raises(NotImplementedError):
        SinkBase().write(Batch([]))


def test_batch_is_a_sequence_with_attempt() -> None:
    b = Batch([], attempt=3, size_bytes=10)
    assert len(b) == 0
    assert list(b) == []
    assert b.attempt == 3
    assert b.size_bytes == 10
    assert "attempt=3" in repr(b)


def test_results() -> None:
    assert RetryLater().delay is None
    assert RetryLater(2.0, "busy").reason == "busy"
    assert Rejected({0: "no"}).failures == {0: "no"}
    assert type(OK)() == OK


def test_shipped_sinks_are_registered() -> None:
    found = available_sinks()
    assert {"file", "stdout", "null"} <= set(found)
    assert load_factory("null") is NullSink
    assert load_factory("file") is FileSink


def test_unknown_sink_names_the_available_ones() -> None:
    with pytest.raises(SinkNotFoundError) as err:
        load_factory("no-such-sink")
    assert "null" in str(err.value)
    assert isinstance(err.value, GovbusError)


def test_explicit_class_spec() -> None:
    factory = load_factory("mine", f"{__name__}:ThirdPartySink")
    assert factory is ThirdPartySink
    sink = create_sink("mine", factory, {"url": "y"})
    assert isinstance(sink, ThirdPartySink)
    assert sink.url == "y"
    with pytest.raises(SinkError, match=r"package\.module:Attribute"):
        load_factory("mine", "no-colon")
    with pytest.raises(SinkError, match="cannot load"):
        load_factory("mine", "no.such.module:X")


def test_bad_options_name_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        create_sink("null", NullSink, {"nope": "1"})
    assert err.value.setting == "GOVBUS_SINK__OPTIONS__NOPE"
    assert "this sink takes: delay_ms" in err.value.message
    for bad in ("soon", "-5"):
        with pytest.raises(ConfigError) as err:
            create_sink("null", NullSink, {"delay_ms": bad})
        assert err.value.setting == "GOVBUS_SINK__OPTIONS__DELAY_MS"
    assert create_sink("null", NullSink, {"delay_ms": "3"}).delay == 0.003  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as err:
        create_sink("stdout", StdoutSink, {"path": "/x"})
    assert err.value.setting == "GOVBUS_SINK__OPTIONS__PATH"
    assert "this sink takes none" in err.value.message
    # A constructor that is not on the options model still gets the generic variable.
    with pytest.raises(ConfigError) as err:
        create_sink("mine", ThirdPartySink, {"nope": "1"})
    assert err.value.setting == "GOVBUS_SINK__OPTIONS"


def test_a_missing_option_does_not_echo_the_others() -> None:
    with pytest.raises(ConfigError) as err:
        create_sink("http", HttpSink, {"token": "s3cret-token"})
    assert err.value.setting == "GOVBUS_SINK__OPTIONS__URL"
    assert "s3cret" not in str(err.value)
    assert err.value.message == "is required"


def test_object_without_the_protocol_is_refused() -> None:
    with pytest.raises(SinkError, match="lacks open, flush, close"):
        create_sink("half", HalfSink, {})
