"""The pure core: Work, events, the fold, subjects, ids, errors, settings.

No I/O here: nothing from nats, duckdb, pyarrow, textual, typer or rich, and nothing from
the outer layers (import-linter keeps it so).
"""
