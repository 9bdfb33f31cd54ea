"""Storages for products and plots, the worker's archiver, and the readers that fetch them.

A layer of its own between the log and the worker/results (import-linter's contract):
it uses the log's NATS connection (the object store), and the worker and the client use it.
"""
