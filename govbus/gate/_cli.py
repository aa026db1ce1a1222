"""``govbus gate check``: would an agent be admitted now? Exit 0 only if so (a readiness probe)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from govbus._settings import GovbusSettings, load_settings
from govbus.gate._checks import BusProbe, ComponentStatus
from govbus.gate._gate import Gate
from govbus.gate._policy import GatePolicy, load_policy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gate = sub.add_parser("gate", help="the policy gate")
    gsub = gate.add_subparsers(dest="gate_command", metavar="ACTION", required=True)
    check = gsub.add_parser("check", help="run every check once; exit 0 only when admission would be granted")
    check.add_argument("--policy", type=Path, help="policy file (YAML or JSON); default GOVBUS_GATE__POLICY_FILE")
    check.add_argument("--agent", default="readiness-probe", help="agent id the decision is for")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=_check)


def build_policy(settings: GovbusSettings, policy_file: Path | None = None) -> GatePolicy:
    return load_policy(policy_file or settings.gate.policy_file, settings.gate.overrides())


def producer_health_file_source(path: Path, max_age_s: float) -> ComponentStatus:
    """The producer's health as its Bus last wrote it to ``path`` (out-of-process probes)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ComponentStatus(False, f"no producer health file at {path} (is the kernel's Bus running?)")
    except (OSError, ValueError) as exc:
        return ComponentStatus(False, f"unreadable producer health file {path}: {exc}")
    age = time.time() - float(data.get("written_at", 0))
    if age > max_age_s:
        return ComponentStatus(False, f"producer health file is {age:.0f} s old (max {max_age_s:g} s)")
    return ComponentStatus(bool(data.get("ok")), str(data.get("reason", "")))


def signing_status(settings: GovbusSettings) -> ComponentStatus:
    """Whether this process could sign: the key file loads (permissions checked) and is active in the keyring."""
    from govbus.signing import Signer, SigningError

    try:
        signer = Signer.from_settings(settings.signing)
    except (SigningError, OSError) as exc:
        return ComponentStatus(False, str(exc))
    return ComponentStatus(True, f"kid {signer.kid} loaded ({signer.mode} mode)")


def _check(args: argparse.Namespace) -> int:
    settings = load_settings()
    policy = build_policy(settings, args.policy)
    producer_source = None
    spool_dir = _spool_dir(settings)
    if spool_dir is not None:
        health_file = spool_dir / "health.json"
        max_age = settings.gate.producer_health_max_age_s
        producer_source = lambda: producer_health_file_source(health_file, max_age)  # noqa: E731
    probe = BusProbe(
        settings.kafka.librdkafka(),
        settings.topic,
        producer=producer_source,
        signing=lambda: signing_status(settings),
    )
    # One-shot: the raw results decide, so debounce does not apply.
    one_shot = policy.model_copy(update={"debounce": policy.debounce.model_copy(update={"pass_after": 1})})
    gate = Gate(one_shot, probe.run)
    snap = gate.refresh()
    decision = gate.admit(args.agent)
    if args.json:
        print(
            json.dumps(
                {
                    "allowed": decision.allowed,
                    "mode": decision.mode,
                    "would_deny": decision.would_deny,
                    "reasons": list(decision.reasons),
                    "checked_at": snap.checked_at.isoformat(),
                    "checks": [{"name": c.name, "ok": c.passing, "reason": c.reason} for c in snap.checks],
                },
                indent=2,
            )
        )
    else:
        width = max([len(c.name) for c in snap.checks] + [5])
        print(f"{'check':<{width}}  state  reason")
        for c in snap.checks:
            print(f"{c.name:<{width}}  {'pass' if c.passing else 'FAIL':<5}  {c.reason}")
        verdict = "admitted" if decision.allowed else "DENIED"
        if decision.allowed and decision.would_deny:
            verdict += " (observe mode: enforce would deny)"
        print(f"\n{verdict} — mode {decision.mode}, checked {snap.checked_at.isoformat(timespec='seconds')}")
    return 0 if decision.allowed else 1


def _spool_dir(settings: GovbusSettings) -> Path | None:
    producer = getattr(settings, "producer", None)
    spool = getattr(producer, "spool_dir", None)
    return Path(spool) if spool else None
