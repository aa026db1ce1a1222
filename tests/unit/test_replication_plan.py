"""``govbus topics create``'s replication: production defaults on a cluster, warnings where they cannot be had."""

from __future__ import annotations

from govbus._replication import plan_replication


def test_a_cluster_of_three_gets_rf3_min_isr2_no_unclean_election_without_warnings() -> None:
    plan = plan_replication(3, -1, None)
    assert plan.replication_factor == 3
    assert plan.config == {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}
    assert plan.warnings == []
    assert plan_replication(5, None, None).replication_factor == 3


def test_a_single_broker_gets_rf1_and_a_warning() -> None:
    plan = plan_replication(1, -1, None)
    assert (plan.replication_factor, plan.config["min.insync.replicas"]) == (1, "1")
    assert len(plan.warnings) == 1
    assert "only 1 broker(s) answered: replication factor 1 instead of 3" in plan.warnings[0]


def test_two_brokers_warn_about_both_settings() -> None:
    plan = plan_replication(2, -1, None)
    assert (plan.replication_factor, plan.config["min.insync.replicas"]) == (2, "1")
    assert any("replication factor 2 instead of 3" in w for w in plan.warnings)
    assert any("on one broker only" in w for w in plan.warnings)


def test_explicit_choices_are_kept_and_weak_ones_warned_about() -> None:
    plan = plan_replication(3, 2, 2)
    assert (plan.replication_factor, plan.config["min.insync.replicas"]) == (2, "2")
    assert any("below the production default 3" in w for w in plan.warnings)
    assert any("any broker failure stops writes" in w for w in plan.warnings)
    assert any("creation will fail" in w for w in plan_replication(1, 3, None).warnings)
    assert plan_replication(3, 3, 1).warnings == [
        "min.insync.replicas 1: an acknowledged event may be on one broker only"
    ]
