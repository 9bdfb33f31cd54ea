"""The log: the connection to NATS, appending with per-work CAS, history, streams,
buckets, and the async client built on them.

``client`` composes the parts: ``gateway`` (reading and appending), ``deposits``,
``claims`` (withdraw, leases, heartbeats), ``outcomes`` and ``operations``.
"""
