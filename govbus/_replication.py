"""How ``govbus topics create`` replicates a topic: production defaults where the cluster allows them.

On a cluster of three or more brokers: replication factor 3, ``min.insync.replicas=2`` (an
acknowledged event is on two brokers before ``emit()``'s delivery is confirmed; one broker may fail
without stopping writes) and unclean leader election off (an out-of-sync replica never becomes
leader, which would silently drop acknowledged events). Smaller clusters get the most they can
hold, with a warning saying what is not protected; explicit choices are kept, with a warning when
they are weaker than the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRODUCTION_REPLICATION_FACTOR = 3
PRODUCTION_MIN_INSYNC_REPLICAS = 2


@dataclass(frozen=True)
class ReplicationPlan:
    replication_factor: int
    config: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def plan_replication(brokers: int, replication_factor: int | None, min_insync_replicas: int | None) -> ReplicationPlan:
    """The replication of a new topic on a cluster of ``brokers`` live brokers (None/-1: choose)."""
    warnings: list[str] = []
    if replication_factor is None or replication_factor < 1:
        rf = max(1, min(PRODUCTION_REPLICATION_FACTOR, brokers))
        if brokers < PRODUCTION_REPLICATION_FACTOR:
            warnings.append(
                f"only {brokers} broker(s) answered: replication factor {rf} instead of "
                f"{PRODUCTION_REPLICATION_FACTOR}; losing a broker "
                + ("makes the topic unavailable and may lose events" if rf == 1 else "leaves a single copy")
            )
    else:
        rf = replication_factor
        if rf < PRODUCTION_REPLICATION_FACTOR <= brokers:
            warnings.append(
                f"--replication-factor {rf} on a cluster of {brokers} brokers: below the production "
                f"default {PRODUCTION_REPLICATION_FACTOR}"
            )
        if rf > brokers:
            warnings.append(f"--replication-factor {rf} exceeds the {brokers} live broker(s): creation will fail")
    if min_insync_replicas is None or min_insync_replicas < 1:
        min_isr = PRODUCTION_MIN_INSYNC_REPLICAS if rf >= PRODUCTION_REPLICATION_FACTOR else 1
        if rf > 1 and min_isr < PRODUCTION_MIN_INSYNC_REPLICAS:
            warnings.append(
                f"min.insync.replicas 1 with replication factor {rf}: an acknowledged event may be on one broker only"
            )
    else:
        min_isr = min_insync_replicas
        if min_isr >= rf > 1:
            warnings.append(
                f"min.insync.replicas {min_isr} with replication factor {rf}: any broker failure stops writes"
            )
        elif min_isr < PRODUCTION_MIN_INSYNC_REPLICAS < rf + 1 and rf > 1:
            warnings.append(f"min.insync.replicas {min_isr}: an acknowledged event may be on one broker only")
    config = {"min.insync.replicas": str(min_isr), "unclean.leader.election.enable": "false"}
    return ReplicationPlan(rf, config, warnings)
