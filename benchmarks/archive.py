"""Benchmark: archiving products, against the raw clients writing the same bytes in the same run.

    .venv/bin/python benchmarks/archive.py                # 1 GiB: 10 x 100 MiB and 1,000 x 1 MiB
    .venv/bin/python benchmarks/archive.py --mib 256      # a quicker run (same shapes, scaled)

Starts a throw-away nats-server (the products object store created as `workflow server`
creates it) and, for each storage and each file shape:

1. **object store**: `ObjectStoreStorage.put` (what the worker's archiver calls: chunked,
   sha256 while streaming, the size limit checked) against nats-py's own
   `ObjectStore.put` of the same files (chunk size 512 KiB, as ours);
2. **POSIX**: `PosixStorage.put` (chunked copy to a temporary name, sha256, rename) against
   `cp` of the same files;
3. **products get**: `client.products.download` of one large archived file (streamed,
   verified) against nats-py's `ObjectStore.get(writeinto=file)`;
4. **worker RSS**: a `workflow run` worker (a child process; the function runs in its own
   child) archiving one file of the whole size: the worker's peak RSS (VmHWM) minus its
   RSS before (the goal: under 64 MiB whatever the size).

Prints a markdown table to paste in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js import api

import workflow
from workflow.archive.objectstore import CHUNK_BYTES, ObjectStoreStorage
from workflow.archive.posix import PosixStorage
from workflow.archive.storage import Place
from workflow.server import EmbeddedNats, prepare_log

MiB = 1 << 20


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MiB)
    paths = []
    for i in range(count):
        path = folder / f"f{i:04d}.dat"
        with open(path, "wb") as out:
            left = size
            while left > 0:
                out.write(block[: min(left, MiB)])
                left -= MiB
        paths.append(path)
    return paths


def place(i: int) -> Place:
    return Place(work_id="BENCH", pipeline="bench", attempt=1, kind="product", name=f"f{i:04d}.dat", created=0.0)


async def timed(action) -> float:
    began = time.perf_counter()
    await action()
    return time.perf_counter() - began


async def objectstore_rates(nc, files: list[Path]) -> tuple[float, float]:
    """(ours, raw) seconds for putting ``files``, each run on an emptied bucket."""
    js = nc.jetstream()
    store = await js.object_store("PRODUCTS")
    ours = ObjectStoreStorage(nc, "PRODUCTS")

    async def put_ours() -> None:
        for i, path in enumerate(files):
            await ours.put(path, place(i), limit=None)

    async def put_raw() -> None:
        for i, path in enumerate(files):
            with open(path, "rb") as file:
                await store.put(f"raw/{i}", file, meta=api.ObjectMeta(
                    name=f"raw/{i}", options=api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES)))

    raw = await timed(put_raw)
    await js.purge_stream("OBJ_PRODUCTS")
    mine = await timed(put_ours)
    await js.purge_stream("OBJ_PRODUCTS")
    return mine, raw


async def posix_rates(files: list[Path], mount: Path) -> tuple[float, float, float]:
    """(ours, cp, cp + sha256sum) seconds."""
    storage = PosixStorage(str(mount))

    async def put_ours() -> None:
        for i, path in enumerate(files):
            await storage.put(path, place(i), limit=None)

    def cp(checksum: bool) -> None:
        target = mount / "cp"
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", *map(str, files), str(target)], check=True)
        if checksum:  # what a copy that records a sha256 must do at least
            subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)

    mount.mkdir(parents=True, exist_ok=True)
    seconds = []
    for checksum in (False, True):
        began = time.perf_counter()
        await asyncio.to_thread(cp, checksum)
        seconds.append(time.perf_counter() - began)
        shutil.rmtree(mount / "cp")
    mine = await timed(put_ours)
    shutil.rmtree(mount)
    return mine, seconds[0], seconds[1]


async def download_rates(url: str, nc, big: Path, folder: Path) -> tuple[float, float]:
    """(products get, raw get) seconds for one archived file of ``big``'s size."""
    async with workflow.connect(url) as client:
        [work_id] = await client.deposit(workflow.Work(pipeline="bench", parameters={}, path=str(big.parent)))
        work = await workflow.Work.withdraw(pipeline="bench")  # a lease, to record an outcome with archived files
        assert work is not None and work.id == work_id
        from workflow.archive.archiver import Archiver
        from workflow.core.archiving import ArchiveSettings
        from workflow.core.products import uris

        archiver = Archiver(ArchiveSettings(limits={"objectstore": 1 << 40}), ObjectStoreStorage(client.nc, "PRODUCTS"))
        archived = await archiver.archive(work, work.attempt, [str(big)], None)
        await client.succeed(work, None, uris(archived, "product"), None, archived=archived)
        mine = await timed(lambda: client.products.download(work_id, folder / "ours"))
    store = await nc.jetstream().object_store("PRODUCTS")
    key = archived[0].uri.removeprefix("obj://PRODUCTS/")
    (folder / "raw").mkdir(parents=True, exist_ok=True)

    async def raw_get() -> None:
        with open(folder / "raw" / "big", "wb") as out:
            await store.get(key, writeinto=out)

    raw = await timed(raw_get)
    return mine, raw


WORKER_RSS = r"""
import asyncio, os, sys
os.environ["WORKFLOW_LEASE_SECONDS"] = "30"
from workflow.api import Client
from workflow.core.archiving import ArchiveSettings
from workflow.worker.loop import WorkerConfig, run_worker

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
before = rss("VmRSS")
config = WorkerConfig(pipelines=["rss"], function="workflow.examples.with_products", lives=1, sleep=1,
                      isolation="process", connect={"url": sys.argv[1]},
                      archive=ArchiveSettings(limits={"objectstore": 1 << 40}))
code = run_worker(config, Client)
print(before, rss("VmHWM"), code)
"""


async def worker_rss(url: str, size: int, folder: Path) -> tuple[int, int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    async with workflow.connect(url) as client:
        [work_id] = await client.deposit(workflow.Work(
            pipeline="rss", parameters={"name": "big", "directory": str(folder), "size": size}, path=str(folder),
            config={"archive": {"products": "move", "plots": "move"}}))
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", WORKER_RSS, url],
                                      capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        before, peak, _ = out.stdout.split()
        work = await client.get(work_id)
        return int(before), int(peak), f"{work.status} {work.products}"


def rate(size: int, seconds: float) -> str:
    return f"{size / MiB / seconds:,.0f} MB/s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024, help="total size of each file set, in MiB")
    args = parser.parse_args()
    total = args.mib * MiB
    with tempfile.TemporaryDirectory(prefix="workflow-archive-bench-") as tmp:
        root = Path(tmp)
        server = EmbeddedNats(root / "nats", port=-1).start()
        try:
            await prepare_log(server.url, products_max_bytes=4 * total + (256 * MiB))
            nc = await nats.connect(server.url)
            rows = []
            for label, count in (("10 files", 10), (f"{args.mib} files", args.mib)):
                size = total // count
                files = make_files(root / "in" / label.replace(" ", "-"), count, size)
                mine, raw = await objectstore_rates(nc, files)
                rows.append((f"object store, {label} of {size // MiB} MiB", rate(total, mine),
                             f"nats-py put {rate(total, raw)}", f"{raw / mine:.2f}"))
                mine, raw, hashed = await posix_rates(files, root / "mount")
                rows.append((f"POSIX mount, {label} of {size // MiB} MiB", rate(total, mine),
                             f"cp {rate(total, raw)}; cp + sha256sum {rate(total, hashed)}",
                             f"{raw / mine:.2f}; {hashed / mine:.2f}"))
                shutil.rmtree(root / "in" / label.replace(" ", "-"))
            [big] = make_files(root / "in" / "big", 1, total)
            mine, raw = await download_rates(server.url, nc, big, root / "out")
            rows.append((f"products get, 1 file of {args.mib} MiB", rate(total, mine),
                         f"nats-py get {rate(total, raw)}", f"{raw / mine:.2f}"))
            shutil.rmtree(root / "in")
            shutil.rmtree(root / "out")
            await nc.jetstream().purge_stream("OBJ_PRODUCTS")
            before, peak, outcome = await worker_rss(server.url, total, root / "rss")
            await nc.close()
        finally:
            server.stop()
    print(f"\n| archiving ({args.mib} MiB per set) | workflow | raw, same run | ratio |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nworker archiving one {args.mib} MiB file (move): RSS {before / MiB:.0f} MiB before, "
          f"peak {peak / MiB:.0f} MiB (growth {(peak - before) / MiB:.0f} MiB); the work: {outcome}")


if __name__ == "__main__":
    asyncio.run(main())
