"""Benchmark: the projector's CPU per event (decode, row fold, Arrow tables), without NATS or DuckDB.

    .venv/bin/python benchmarks/fold_cpu.py                # 200,000 works (~280,000 events)
    .venv/bin/python benchmarks/fold_cpu.py --works 50000 --repeat 7

The pure part of the projector (``results/projection.py``: ``read`` then ``Batch.fold`` then
``Batch.tables``) over the synthetic log of ``benchmarks/replay.py``, in batches as the live
projector cuts them, measured in CPU seconds of this process (``time.process_time``: another
process's load costs wall time, not this). The baseline, in the same run, is msgspec decoding
each event into plain Python objects: the least any reader does. The ratio fold/baseline is
what to compare between two versions of the code; a change to the row fold should keep it
within a few per cent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).parent))
from replay import synthetic_log
from workflow.results import projection

BATCH = 10_000


def cpu(run, repeat: int) -> float:
    """The least CPU time of ``repeat`` runs (the others were disturbed more)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    log, _ = synthetic_log(args.works, 0.2)
    messages = [(subject, data) for subject, data, _ in log]
    decode = msgspec.json.decode

    def baseline() -> None:
        for _, data in messages:
            decode(data)

    batches = [[(seq, 0.0, subject, data, projection.read(subject, data))
                for seq, (subject, data) in enumerate(messages[start : start + BATCH], start + 1)]
               for start in range(0, len(messages), BATCH)]

    def read() -> None:
        for subject, data in messages:
            projection.read(subject, data)

    def fold() -> None:  # the row fold alone: what ``apply`` costs
        rows: dict[str, projection.Row] = {}
        for decoded in batches:
            batch = projection.Batch()
            batch.fold(decoded, rows.get)
            rows.update(batch.rows)

    def tables() -> None:
        rows: dict[str, projection.Row] = {}
        for decoded in batches:
            batch = projection.Batch()
            batch.fold(decoded, rows.get)
            batch.tables()
            rows.update(batch.rows)

    events = len(messages)
    measured = {"raw msgspec decode": cpu(baseline, args.repeat),
                "read (light decode + checks)": cpu(read, args.repeat),
                "row fold (apply)": cpu(fold, args.repeat),
                "row fold + Arrow tables": cpu(tables, args.repeat)}
    base = measured["raw msgspec decode"]
    print(f"| {events:,} events | CPU µs per event | / raw decode |")
    print("|---|---|---|")
    for name, seconds in measured.items():
        print(f"| {name} | {seconds / events * 1e6:.2f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
