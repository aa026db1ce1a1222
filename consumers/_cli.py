"""``govbus sink run|list``, ``govbus dlq inspect|replay`` and ``govbus lag``."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from typing import Any

from govbus._settings import GovbusSettings, load_settings
from govbus.consumers._dlq import DeadLetter, read_dead_letters, replay_dead_letters
from govbus.consumers._lag import sink_lag
from govbus.consumers._registry import available_sinks, create_sink, load_factory
from govbus.consumers._runtime import SinkRuntime
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.errors import ConfigError

log = logging.getLogger("govbus.consumers.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sink = sub.add_parser("sink", help="run a sink: one consumer group per sink")
    ssub = sink.add_subparsers(dest="sink_command", metavar="SUBCOMMAND", required=True)
    run = ssub.add_parser(
        "run",
        help="consume the event topic and deliver to sink NAME until SIGTERM (the container entrypoint)",
        description="Settings come from GOVBUS_* variables (GOVBUS_SINK__* for the runtime, "
        "GOVBUS_SINK__OPTIONS__<NAME> for the sink); see docs/sinks.md.",
    )
    run.add_argument("name", help="entry-point name in group govbus.sinks (e.g. file, stdout, null)")
    run.add_argument("--class", dest="factory", metavar="MODULE:ATTR", help="load the sink from here instead")
    run.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="sink option (repeatable)"
    )
    run.set_defaults(func=_run)
    lst = ssub.add_parser("list", help="list the sinks installed in the govbus.sinks entry-point group")
    lst.set_defaults(func=_list)

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND", required=True)
    inspect = dsub.add_parser("inspect", help="print the dead letters of sink NAME with their error headers")
    inspect.add_argument("name", help="sink instance name")
    inspect.add_argument("--topic", help="dead-letter topic (default: from GOVBUS_SINK__DLQ__TOPIC_TEMPLATE)")
    inspect.add_argument("--reason", help="only dead letters whose reason starts with this (e.g. decode:)")
    inspect.add_argument("--limit", type=int)
    inspect.add_argument("--json", action="store_true", help="one JSON object per line")
    inspect.set_defaults(func=_inspect)
    replay = dsub.add_parser(
        "replay",
        help="send dead letters back to sink NAME (only that sink) once the cause is fixed",
        description="Dead letters go to the sink's replay topic, which only its consumer group reads. "
        "Progress is kept in consumer group govbus.dlq-replay.<sink>, so each dead letter is replayed once.",
    )
    replay.add_argument("name", help="sink instance name")
    replay.add_argument("--reason", help="only dead letters whose reason starts with this (others are passed over)")
    replay.add_argument("--limit", type=int)
    replay.add_argument("--from-beginning", action="store_true", help="ignore earlier progress, start at offset 0")
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
    replay.add_argument("--topic", help="dead-letter topic (default: from the template)")
    replay.set_defaults(func=_replay)

    lag = sub.add_parser("lag", help="print how far each sink's consumer group is behind, per partition")
    lag.add_argument("--sink", action="append", metavar="NAME", help="only this sink (repeatable)")
    lag.add_argument("--json", action="store_true")
    lag.set_defaults(func=_lag)


def _sink_settings(settings: GovbusSettings) -> SinkRuntimeSettings:
    s: SinkRuntimeSettings | None = getattr(settings, "sink", None)
    return s if s is not None else SinkRuntimeSettings()


def _options(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--option", f"expected KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    s = _sink_settings(settings)
    factory = load_factory(args.name, args.factory)
    options = {**s.options, **_options(args.option)}
    sink = create_sink(args.name, factory, options)
    runtime = SinkRuntime(sink, settings, name=args.name, install_signal_handlers=True)
    tune_gc()
    runtime.run()
    return 0


# Young collections wait for this many new container objects (CPython's default: 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """The cyclic GC of a process that exists to run one sink (``govbus sink run``; the consumer
    benchmark does the same). Everything loaded so far lives as long as the process: freezing it
    keeps the in-flight records' full collections from rescanning the startup heap (measured in
    the runtime: full collections 0.65-0.81 s -> 0.15-0.17 s per 100k records). Each in-flight
    record keeps a few containers alive (its headers, ``Work``, record) until acknowledged, so
    with the default threshold young collections ran every ~30 records and kept re-walking them
    (13% of the consume loop); a larger one cut the CPU per event by ~10% (issue 14, docs/native.md).
    The records' memory is freed by reference counting either way; only cyclic garbage waits."""
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gen0), gen1, gen2)


def _list(args: argparse.Namespace) -> int:
    for name, ep in sorted(available_sinks().items()):
        print(f"{name:<12} {ep.value}")
    return 0


def _dlq_topic(settings: GovbusSettings, name: str, override: str | None) -> str:
    s = _sink_settings(settings)
    return override or s.dlq_topic(s.topic or settings.topic, name)


def _inspect(args: argparse.Namespace) -> int:
    settings = load_settings()
    topic = _dlq_topic(settings, args.name, args.topic)
    count = 0
    for dl in read_dead_letters(settings.kafka.librdkafka(), topic, limit=args.limit, reason=args.reason):
        count += 1
        print(json.dumps(_describe(dl), ensure_ascii=False) if args.json else _line(dl), flush=True)
    if not args.json:
        print(f"# {count} dead letter(s) in {topic}", file=sys.stderr)
    return 0


def _describe(dl: DeadLetter) -> dict[str, Any]:
    error = dl.error
    return {
        "dlq": f"{dl.topic}[{dl.partition}]@{dl.offset}",
        "reason": error.get("reason"),
        "verdict": error.get("verdict"),
        "exception": error.get("exception"),
        "message": error.get("message"),
        "origin": f"{error.get('topic')}[{error.get('partition')}]@{error.get('offset')}",
        "sink": error.get("sink"),
        "time": error.get("time"),
        "count": int(error.get("count", "1")),
        "event_id": dl.event_id,
        "key": dl.key.decode("utf-8", "replace") if dl.key is not None else None,
        "value_bytes": len(dl.value) if dl.value is not None else None,
        "value_head": dl.value[:16].hex() if dl.value else None,
    }


def _line(dl: DeadLetter) -> str:
    d = _describe(dl)
    return (
        f"{d['dlq']}  {d['time']}  {d['reason']}  origin={d['origin']}  event={d['event_id']}  "
        f"bytes={d['value_bytes']}  count={d['count']}  {d['message']}"
    )


def _replay(args: argparse.Namespace) -> int:
    settings = load_settings()
    s = _sink_settings(settings)
    topic = s.topic or settings.topic
    dlq_topic = _dlq_topic(settings, args.name, args.topic)
    target = s.replay_topic(topic, args.name)

    def show(dl: DeadLetter, chosen: bool) -> None:
        if args.dry_run or not chosen:
            print(("would replay  " if chosen else "passing over  ") + _line(dl), flush=True)

    report = replay_dead_letters(
        settings.kafka.librdkafka(),
        dlq_topic,
        target,
        group=f"govbus.dlq-replay.{args.name}",
        reason=args.reason,
        limit=args.limit,
        from_beginning=args.from_beginning,
        dry_run=args.dry_run,
        on_record=show,
    )
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {report.replayed} dead letter(s) to {report.target}; passed over {report.passed_over}")
    return 0


def _lag(args: argparse.Namespace) -> int:
    settings = load_settings()
    s = _sink_settings(settings)
    groups = [s.group_id or f"govbus.sink.{n}" for n in args.sink] if args.sink else None
    result = sink_lag(settings.kafka.librdkafka(), groups=groups)
    if args.json:
        out = [
            {
                "sink": g.sink,
                "group": g.group,
                "state": g.state,
                "members": g.members,
                "declared_class": g.declared_class,
                "lag": g.total,
                "partitions": [vars(p) for p in g.partitions],
            }
            for g in result
        ]
        print(json.dumps(out, indent=2))
        return 0
    if not result:
        print("no sink consumer groups found")
        return 0
    print(f"{'sink':<20} {'topic':<32} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}")
    for g in result:
        for p in g.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            print(f"{g.sink:<20} {p.topic:<32} {p.partition:>4} {committed:>10} {p.end:>10} {p.lag:>8}")
        print(f"{g.sink:<20} total lag {g.total} ({g.state}, {g.members} member(s))")
    return 0
