"""The log: the connection to NATS, appending with per-work CAS, history, streams,
buckets, and the async client built on them.
"""
