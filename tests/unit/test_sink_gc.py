"""``govbus sink run`` tunes the cyclic GC of its process once, before it runs its one sink."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from govbus.consumers._cli import GC_GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_the_startup_heap_is_frozen_and_young_collections_wait_longer() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored_gc")
def test_a_larger_threshold_set_by_the_operator_is_kept() -> None:
    gc.set_threshold(GC_GEN0_THRESHOLD * 2, 20, 30)
    tune_gc()
    assert gc.get_threshold() == (GC_GEN0_THRESHOLD * 2, 20, 30)
