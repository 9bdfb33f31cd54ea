"""The read model: projection (pure), DuckDB, the projector, queries, the results service
and its client.
"""
