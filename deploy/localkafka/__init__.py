"""A real Apache Kafka broker for development, tests and benchmarks, without Docker.

The broker comes from the official artifacts on Maven Central (fetched once with ``mvn`` into a
per-user cache, see ``_paths.cache_root``) and runs as a single KRaft node on 127.0.0.1 with the
machine's Java 17+::

    from govbus.localkafka import LocalBroker

    with LocalBroker.ephemeral() as broker:
        print(broker.info.bootstrap, broker.info.version)

``govbus dev broker up|down|status`` runs one that outlives the command.
"""

from __future__ import annotations

from ._broker import BrokerInfo, LocalBroker
from ._fetch import KAFKA_VERSION

__all__ = ["KAFKA_VERSION", "BrokerInfo", "LocalBroker"]
