"""``govbus audit verify <ledger>``: check an audit ledger's chain, events and signatures.

Exit status: 0 the ledger is intact, 1 it is broken (the first broken entry is named), 2 the
command could not run (unreadable ledger or keyring).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from govbus.consumers.sinks._ledger import VerifyReport, verify_ledger
from govbus.errors import ConfigError
from govbus.signing import Keyring, SigningError

ENV_KEYRING = "GOVBUS_SIGNING__KEYRING"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser(
        "audit",
        help="inspect audit ledgers written by the audit sink",
        description="Tools for the audit ledger (docs/audit-ledger.md).",
    )
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "verify",
        help="check the hash chain, every event and every signature; name the first broken entry",
        description="Recompute every entry's hash and link, check that each event matches the record it "
        "was ledgered from, and (with a keyring) verify every event signature and checkpoint signature. "
        "Reports the first broken entry: its line, seq and what broke (edited, deleted, reordered…).",
    )
    p.add_argument("ledger", type=Path, help="the ledger file")
    p.add_argument(
        "--keyring",
        type=Path,
        help=f"public keyring (JWKS) of the event signing keys [env {ENV_KEYRING}]; without one, "
        "signatures are not checked",
    )
    p.add_argument(
        "--checkpoint-keyring",
        type=Path,
        help="keyring holding the audit sink's checkpoint key (default: --keyring)",
    )
    p.add_argument("--allow-unsigned", action="store_true", help="accept events that carry no signature")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_verify)


def _load(path: Path | None, option: str) -> Keyring | None:
    if path is None:
        return None
    try:
        return Keyring.load(path)
    except SigningError as exc:
        raise ConfigError(option, str(exc)) from None
    except OSError as exc:
        raise ConfigError(option, f"cannot read {path}: {exc.strerror}") from None


def _verify(args: argparse.Namespace) -> int:
    keyring_path = args.keyring or (Path(os.environ[ENV_KEYRING]) if os.environ.get(ENV_KEYRING) else None)
    keyring = _load(keyring_path, "--keyring")
    checkpoint_keyring = _load(args.checkpoint_keyring, "--checkpoint-keyring")
    try:
        report = verify_ledger(
            args.ledger, keyring=keyring, checkpoint_keyring=checkpoint_keyring, allow_unsigned=args.allow_unsigned
        )
    except OSError as exc:
        raise ConfigError("LEDGER", f"cannot read {args.ledger}: {exc.strerror}") from None
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(
            _describe(report, signatures=keyring is not None, checkpoints=(checkpoint_keyring or keyring) is not None)
        )
    return 0 if report.ok else 1


def _describe(report: VerifyReport, *, signatures: bool, checkpoints: bool) -> str:
    if report.problem is not None:
        return f"{report.path}: BROKEN at {report.problem}\n  {report.entries} entries before it are intact"
    lines = [
        f"{report.path}: OK, {report.entries} entries ({report.events} events, {report.checkpoints} checkpoints)",
        f"  head {report.head}",
    ]
    if signatures:
        lines.append(f"  event signatures verified: {report.signatures_verified}")
    else:
        lines.append("  event signatures: not checked (no --keyring)")
    if report.checkpoints:
        how = f"{report.checkpoints_verified} verified" if checkpoints else "not verified (no keyring)"
        lines.append(f"  last checkpoint: seq {report.last_checkpoint_seq}; checkpoint signatures {how}")
    if report.unsealed:
        lines.append(
            f"  {report.unsealed} entries after the last checkpoint: compare the head with a copy kept "
            "elsewhere to detect their deletion"
        )
    if report.events_undecodable:
        lines.append(f"  {report.events_undecodable} events use a schema this version cannot decode (not compared)")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from govbus._cli import main

    sys.exit(main(["audit", *sys.argv[1:]]))
