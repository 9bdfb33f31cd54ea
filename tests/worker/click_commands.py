"""Click commands and a whole-Work function that the click and --argsource tests run as works
(importable by dotted path from a worker's threads and its process children)."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("source")
@click.option("--count", "-n", type=int, default=1, help="How many times.")
@click.option("--scale", type=float, default=1.0)
@click.option("--loud/--quiet", default=False)
@click.option("--verbose", "-v", count=True)
@click.option("--beam", "beams", multiple=True, type=int)
@click.option("--window", nargs=2, type=int, default=(0, 0))
def calibrate(source: str, count: int, scale: float, loud: bool, verbose: int, beams: tuple[int, ...],
              window: tuple[int, int]) -> dict:
    """What it was given, typed by click, as its results."""
    return {"source": source, "count": count, "scale": scale, "loud": loud, "verbose": verbose,
            "beams": list(beams), "window": list(window)}


@click.command()
@click.argument("files", nargs=-1)
@click.option("--dry-run", is_flag=True)
def stack(files: tuple[str, ...], dry_run: bool) -> dict:
    return {"files": list(files), "dry_run": dry_run}


@click.command()
@click.option("--beam", type=int, required=True)
def refuses(beam: int) -> None:
    raise click.UsageError(f"beam {beam} is not on the sky")


@click.command()
@click.option("--code", type=int, default=0)
def exits(code: int) -> None:
    click.echo(f"exiting with {code}")
    sys.exit(code)


@click.command()
@click.pass_context
def ends_its_context(ctx: click.Context) -> None:
    ctx.exit(3)


def reads_the_event(work):
    """--argsource work: reads the Work's event and tags, sets its results, returns it."""
    work.results = {"event": work.event, "tags": work.tags, "pipeline": work.pipeline}
    work.products = [f"/data/{work.event[0]}.fits"]
    return work


def returns_a_dict(work):
    return {"id": work.id, "attempt": work.attempt}
