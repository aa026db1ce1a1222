"""The shipped Avro schemas of the govbus wire contract (``governance_event.v<N>.avsc``).

Data only: :mod:`govbus._contract` loads them and indexes them by fingerprint.
"""
