"""What verification concluded about one record, for the sink runtime to act on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VerdictCode(StrEnum):
    # Authentic and not seen before: deliver.
    VALID = "valid"
    GAP = "gap"  # authentic; records before it in its stream/partition never arrived (see .missing)
    REORDERED = "reordered"  # authentic; a record earlier reported missing arrived late
    # Authentic but seen before: drop or dead-letter, never deliver twice.
    REPLAY = "replay"
    # Not authentic: dead-letter.
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_KID = "unknown-kid"
    REVOKED_KID = "revoked-kid"
    EXPIRED_KID = "expired-kid"
    MALFORMED = "malformed"


_DELIVER = frozenset({VerdictCode.VALID, VerdictCode.GAP, VerdictCode.REORDERED})
_AUTHENTIC = _DELIVER | {VerdictCode.REPLAY}


@dataclass(frozen=True, slots=True)
class Verdict:
    """``code`` says what to do; ``detail`` says why, for humans and dead-letter headers.

    Sequence verdicts also name the ``stream`` (hex), ``partition`` and ``sequence`` concerned;
    a GAP carries ``missing = (first, last)``, the inclusive range of sequence numbers not seen.
    """

    code: VerdictCode
    detail: str = ""
    stream: str | None = None
    partition: int | None = None
    sequence: int | None = None
    missing: tuple[int, int] | None = None

    @property
    def deliver(self) -> bool:
        """True when the sink should deliver the record: authentic and not a replay."""
        return self.code in _DELIVER

    @property
    def authentic(self) -> bool:
        """True when the signature checked out under a key valid at signing time."""
        return self.code in _AUTHENTIC

    def __str__(self) -> str:
        return f"{self.code.value}: {self.detail}" if self.detail else self.code.value


VALID = Verdict(VerdictCode.VALID)
