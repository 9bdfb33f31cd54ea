"""Long-running followers of the log that only ``workflow server`` runs.

Each reads the log in order, keeps what it needs in memory (rebuilt from the log on every
start), and writes back only through the log's compare-and-set: the resolver releases works
that wait (:mod:`.resolver`), the scheduler deposits schedules' firings (:mod:`.scheduler`).
Several servers may run them at once; the CAS makes the second writer's append a no-op.
The scaler (:mod:`.scaler`) follows the buckets' depth in a process of its own
(``workflow scale``, on a cluster's login node: it needs ``sbatch``), with its rule in
:mod:`workflow.core.scaling`.
:mod:`.restarts` starts one again after a failure. A layer beside ``worker`` and ``results``:
they use the log's client, and nothing below them knows of them.
"""
