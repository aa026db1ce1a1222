"""The compatibility checker: the shipped history holds FULL_TRANSITIVE; each kind of breaking
change is reported with its field and the rule it breaks; transitive levels see further back."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from govbus import _compat as compat
from govbus._compat import Level, Schema, SchemaInvalidError, check, check_history, diff

SHIPPED = compat.shipped()
V2 = SHIPPED[-1].schema


def candidate(change: Callable[[dict[str, Any]], None], label: str = "v3") -> Schema:
    schema = copy.deepcopy(V2)
    change(schema)
    return Schema(label, schema)


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def remove(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda s: s.__setitem__("fields", [f for f in s["fields"] if f["name"] != name])


def retype(name: str, new: Any, *, drop_default: bool = False) -> Callable[[dict[str, Any]], None]:
    def change(s: dict[str, Any]) -> None:
        f = field(s, name)
        f["type"] = new
        if drop_default:
            f.pop("default", None)

    return change


def messages(found: list[compat.Incompatibility]) -> list[str]:
    return [str(i) for i in found]


@pytest.mark.parametrize("level", list(Level))
def test_the_shipped_versions_are_compatible_at_every_level(level: Level) -> None:
    assert check_history(SHIPPED, level) == []


@pytest.mark.parametrize(
    ("change", "level", "expected"),
    [
        (
            remove("agent_id"),
            "FULL_TRANSITIVE",
            ["FORWARD: field 'agent_id' removed without a default (readers v1, v2 cannot read data written by v3)"],
        ),
        (
            retype("latency_ms", "string"),
            "FULL_TRANSITIVE",
            ["FULL: field 'latency_ms' changed type double → string (v3 and v1, v2 cannot read each other's data)"],
        ),
        (
            lambda s: s["fields"].append({"name": "zone", "type": "string"}),
            "BACKWARD",
            ["BACKWARD: field 'zone' added without a default (reader v3 cannot read data written by v2)"],
        ),
        (
            lambda s: (
                field(s, "kind")["type"]["symbols"].remove("CONTENT_VIOLATION"),
                field(s, "kind")["type"].pop("default"),
            ),
            "BACKWARD",
            [
                "BACKWARD: field 'kind' lost enum symbol CONTENT_VIOLATION (EventKind has no default for it) "
                "(reader v3 cannot read data written by v2)"
            ],
        ),
        (
            lambda s: field(field(s, "producer")["type"], "host").__setitem__("type", "int"),
            "FULL",
            ["FULL: field 'producer.host' changed type string → int (v3 and v2 cannot read each other's data)"],
        ),
        (
            retype("contract_version", "long"),  # int → long: new readers read old data, not the reverse
            "FULL",
            ["FORWARD: field 'contract_version' changed type int → long (reader v2 cannot read data written by v3)"],
        ),
        (
            retype("resource", "string", drop_default=True),
            "FULL",
            [
                "BACKWARD: field 'resource' changed type [null, string] → string (reader v3 cannot read data written by v2)"
            ],
        ),
        (
            retype("attributes", {"type": "map", "values": ["null", "string"]}),
            "BACKWARD",
            [
                "BACKWARD: field 'attributes{}' union branches boolean, long, double, JsonValue removed "
                "(reader v3 cannot read data written by v2)"
            ],
        ),
        (
            lambda s: s.__setitem__("name", "Event"),
            "FULL",
            ["FULL: record renamed GovernanceEvent → Event without an alias (v3 and v2 cannot read each other's data)"],
        ),
    ],
    ids=[
        "remove-field",
        "change-type",
        "add-without-default",
        "remove-enum-symbol",
        "nested-field",
        "promotion-one-way",
        "union-narrowed",
        "map-union-branches",
        "rename-record",
    ],
)
def test_a_breaking_change_names_its_field_and_rule(change: Any, level: str, expected: list[str]) -> None:
    assert messages(check(candidate(change), SHIPPED, level)) == expected


@pytest.mark.parametrize(
    "change",
    [
        remove("tenant_id"),  # had a default
        lambda s: s["fields"].append({"name": "zone", "type": ["null", "string"], "default": None}),
        lambda s: field(s, "kind")["type"]["symbols"].append("ANOTHER_KIND"),  # old readers: UNKNOWN
        lambda s: field(s, "reason").__setitem__("doc", "reworded"),
        lambda s: field(s, "reason").__setitem__("aliases", ["why"]),
    ],
    ids=["remove-defaulted", "add-optional", "add-enum-symbol", "doc", "alias"],
)
def test_additive_changes_are_fully_transitively_compatible(change: Any) -> None:
    assert check(candidate(change), SHIPPED, Level.FULL_TRANSITIVE) == []


def test_transitive_levels_check_every_earlier_version() -> None:
    # v3 drops `reason`; v4 brings it back as an int with a default. v4 reads v3's data (no
    # reason: the default) but not v2's (a string where it wants an int).
    v3 = candidate(remove("reason"), "v3")
    v4 = candidate(lambda s: retype("reason", "int")(s) or field(s, "reason").__setitem__("default", 0), "v4")
    history = [*SHIPPED, v3]
    assert check(v4, history, Level.BACKWARD) == []
    assert messages(check(v4, history, Level.BACKWARD_TRANSITIVE)) == [
        "BACKWARD: field 'reason' changed type string → int (reader v4 cannot read data written by v1, v2)"
    ]


def test_none_checks_nothing() -> None:
    assert check(candidate(remove("agent_id")), SHIPPED, Level.NONE) == []


def test_an_invalid_candidate_is_an_error_naming_it() -> None:
    with pytest.raises(SchemaInvalidError, match="v3 is not a valid Avro schema"):
        check(candidate(retype("resource", "string")), SHIPPED, Level.FULL)  # default null no longer fits


def test_reader_problems_for_one_pair() -> None:
    assert compat.reader_problems(SHIPPED[0].schema, V2) == []
    assert compat.reader_problems(candidate(remove("agent_id")).schema, V2) == []
    assert compat.reader_problems(V2, candidate(remove("agent_id")).schema) == [
        "field 'agent_id' added without a default"
    ]


def test_fastavro_agrees_and_its_verdict_is_the_fallback() -> None:
    broken = compat._Parsed(candidate(retype("latency_ms", "string")))
    assert compat._fastavro_failure(broken, compat._Parsed(SHIPPED[-1])) is not None
    assert compat._fastavro_failure(compat._Parsed(SHIPPED[-1]), compat._Parsed(SHIPPED[0])) is None


def test_diff_lists_field_level_changes() -> None:
    assert diff(SHIPPED[0], SHIPPED[1]) == [
        "+ field 'kind': enum EventKind symbol DATA_EXFILTRATION_DETECTED",
        "+ field 'tenant_id': [null, string] = null",
        "+ field 'policy_version': [null, string] = null",
        "+ field 'risk_score': [null, double] = null",
    ]
    changed = candidate(
        lambda s: (
            remove("agent_id")(s),
            retype("latency_ms", "string")(s),
            field(s, "schema_version").__setitem__("default", "2"),
        )
    )
    assert diff(SHIPPED[1], changed) == [
        "- field 'agent_id': string, no default",
        "~ field 'latency_ms': type double → string",
        '~ field \'schema_version\': default "1" → "2"',
    ]
    assert diff(SHIPPED[1], SHIPPED[1]) == []
