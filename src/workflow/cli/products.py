"""``workflow products ls|get``: a work's archived products and plots, from any machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.table import Table

import workflow
from workflow.cli.options import AsJson, Connection, connection_options
from workflow.cli.output import console, print_json, with_client
from workflow.core.products import ArchivedFile, scheme

WorkId = Annotated[str, typer.Argument(metavar="ID", help="The work's id.")]


def _size(item: ArchivedFile) -> str:
    return "-" if item.size is None else f"{item.size:,}"


@connection_options
def ls(work_id: WorkId, as_json: AsJson = False, *, connection: Connection) -> None:
    """The work's products and plots as its last attempt recorded them: name, size, storage, sha256, URI."""
    found: list[ArchivedFile] = with_client(connection, lambda client: client.products.list(work_id))
    if as_json:
        print_json([msgspec.to_builtins(item) for item in found])
        return
    if not found:
        console.print(f"work {work_id} recorded no products or plots", highlight=False)
        return
    table = Table("kind", "name", "size", "storage", "method", "sha256", "uri")
    for item in found:
        storage = item.storage or ("-" if item.uri is None else scheme(item.uri))
        table.add_row(item.kind, item.name, _size(item), storage, item.method, (item.sha256 or "-")[:16],
                      item.uri or "(deleted)")
    console.print(table)


@connection_options
def get(
    work_id: WorkId,
    names: Annotated[list[str] | None, typer.Argument(
        metavar="[NAME]...", help="Only these files (default: all).")] = None,
    to: Annotated[Path, typer.Option(
        "--to", help="Directory to write them in (created if missing).")] = Path("."),
    *,
    connection: Connection,
) -> None:
    """Stream the work's products and plots here (or --to DIR), each verified against the
    sha256 the log recorded; a file that fails verification is not kept (exit 1).

    Example: workflow products get 01J... candidate.h5 --to ./out
    """

    async def fetch(client: workflow.Client) -> list[Path]:
        return await client.products.download(work_id, to, names or None)

    for path in with_client(connection, fetch):
        console.print(f"{path} ({path.stat().st_size:,} bytes, sha256 verified)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``products ls|get`` to the CLI."""
    products_app = typer.Typer(
        help="A work's archived products and plots: list them, fetch them (checksums verified).",
        no_args_is_help=True,
    )
    products_app.command("ls")(ls)
    products_app.command("get")(get)
    app.add_typer(products_app, name="products")
