"""The log's definition (``streams/*.json``) and applying it to a server, idempotently.

The JSON files use the JetStream API's own format (the one ``nats stream add --config``
reads, durations in nanoseconds), so operators can use the standard tools on them.
Applying creates a missing stream; an existing stream whose configuration differs is
*reported*, never silently changed: the log is the system's memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.aio.client

from workflow.core.errors import NotFoundError, StreamConfigMismatchError
from workflow.log import jsapi
from workflow.log.resources import data_path


@dataclass(frozen=True)
class StreamApplied:
    name: str
    created: bool
    updated: bool


def load_stream_configs(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every stream definition in ``directory`` (default: the shipped ``streams/``)."""
    directory = directory or data_path("streams")
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def differences(wanted: dict[str, Any], actual: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose value in ``wanted`` differs from the server's (``actual``)."""
    return {
        key: (value, actual.get(key))
        for key, value in wanted.items()
        if actual.get(key) != value and not (key == "description" and actual.get(key) is None)
    }


async def apply_stream(
    nc: nats.aio.client.Client,
    config: dict[str, Any],
    *,
    replicas: int | None = None,
    update: bool = False,
) -> StreamApplied:
    """Create the stream if missing; if it exists, check (or with ``update``, apply) its config."""
    config = dict(config)
    if replicas is not None:
        config["num_replicas"] = replicas
    name = config["name"]
    try:
        info = jsapi.checked(await jsapi.request(nc, f"STREAM.INFO.{name}"), f"cannot read stream {name}")
    except NotFoundError:
        jsapi.checked(await jsapi.request(nc, f"STREAM.CREATE.{name}", config), f"cannot create stream {name}")
        return StreamApplied(name, created=True, updated=False)
    diff = differences(config, info["config"])
    if not diff:
        return StreamApplied(name, created=False, updated=False)
    if not update:
        listing = "; ".join(f"{k}: wanted {w!r}, server has {a!r}" for k, (w, a) in diff.items())
        raise StreamConfigMismatchError(
            f"stream {name} exists with a different configuration ({listing}). "
            "It was left unchanged; run `workflow streams apply --update` to change it."
        )
    jsapi.checked(await jsapi.request(nc, f"STREAM.UPDATE.{name}", {**info["config"], **config}),
                  f"cannot update stream {name}")
    return StreamApplied(name, created=False, updated=True)


async def apply_streams(
    nc: nats.aio.client.Client,
    directory: Path | None = None,
    *,
    replicas: int | None = None,
    update: bool = False,
) -> list[StreamApplied]:
    """Apply every stream definition of ``directory``."""
    return [
        await apply_stream(nc, config, replicas=replicas, update=update)
        for config in load_stream_configs(directory)
    ]
