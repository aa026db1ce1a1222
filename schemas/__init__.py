"""The shipped Avro schemas of the govbus wire contract (``governance_event.v<N>.avsc``).

Data only: :mod:`govbus._contract` (private) loads them and indexes them by fingerprint.
"""

__all__: list[str] = []
