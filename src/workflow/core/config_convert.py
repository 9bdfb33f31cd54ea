"""A configuration file of the system users come from, rewritten in this one's format.

The differences are mechanical (their documentation, ``workflow-pipelines-yaml-reference``):

- ``version: 1`` names their parser's version: dropped;
- ``pipeline:`` is a mapping of step name to step; here ``steps:`` is a list, each step
  with its ``name`` (the order kept: steps of one stage run at once either way);
- a step name may hold ``_`` there, not here (a name is one subject token: letters,
  digits, ``-``): ``_`` becomes ``-``, and ``pipeline.<step>.status`` in every ``if`` follows;
- ``schedule.cronspec`` is ``schedule.cron`` (5 fields read alike); ``count: 0`` (their
  "every firing") is no ``count`` here;
- their ``range: [start, stop]`` includes ``stop`` (``[1, 2]`` gives 1 and 2), here it is
  excluded as in Python: ``stop`` grows by one;
- ``deployments`` (images, replicas) have no counterpart: dropped, with a note (workers are
  started with ``workflow run``).

:func:`convert` returns the new text and a note for each change a reader should know of;
the result is then read by :func:`workflow.core.configs.parse`, so what no mechanical rule
can decide (a step whose work names no pipeline) is reported like any file's problem.
Comments of the old file are not carried over (PyYAML does not keep them). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from workflow.core.configs import ConfigError, Problem, Yaml12Loader

_STEP_REFERENCE = re.compile(r"\bpipeline\.([A-Za-z0-9_-]+)\.status\b")
_KNOWN = ("version", "name", "schedule", "defaults", "matrix", "pipeline", "deployments")


@dataclass
class Converted:
    """The file in this format, and what was changed that its author should know of."""

    text: str
    notes: list[str] = field(default_factory=list)


def convert(text: str, file: str = "<config>") -> Converted:
    """``text`` (a file of the old format) in this format; ConfigError if it is no such file."""
    try:
        old = yaml.load(text, Loader=Yaml12Loader)  # a safe loader, with YAML 1.2's booleans
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(error, "problem", None) or error
        raise ConfigError(file, [Problem(line, column, f"not valid YAML: {problem}")]) from None
    if not isinstance(old, dict) or not isinstance(old.get("pipeline"), dict):
        already = isinstance(old, dict) and "steps" in old
        raise ConfigError(file, [Problem(1, 1, "already in this format (steps: a list); nothing to convert" if already
                                         else "expected the old format: a mapping with pipeline: {STEP: {...}}")])
    notes: list[str] = []
    new: dict[str, Any] = {}
    version = old.get("version")
    if version is not None and str(version) != "1":
        notes.append(f"version {version!r}: only version 1 is known; converted as version 1")
    if "name" in old:
        new["name"] = old["name"]
    if "schedule" in old:
        new["schedule"] = _schedule(old["schedule"], notes)
    if "defaults" in old:
        new["defaults"] = old["defaults"]
    if "matrix" in old:
        new["matrix"] = _matrix(old["matrix"], "matrix", notes)
    names = _names(list(old["pipeline"]), notes)
    new["steps"] = [_step(name, names, step, notes) for name, step in old["pipeline"].items()]
    if "deployments" in old:
        notes.append("deployments dropped: no counterpart here (start workers with `workflow run PIPELINE`; a "
                     "step's runs_on sets its works' site)")
    for key in old:
        if key not in _KNOWN:
            new[key] = old[key]
            notes.append(f"{key}: not a key of the old format; kept as it is")
    body = yaml.safe_dump(new, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)
    return Converted(f"# converted from {file} by `workflow configs convert`\n{body}", notes)


def _schedule(schedule: Any, notes: list[str]) -> Any:
    if not isinstance(schedule, dict):
        return schedule
    converted = dict(schedule)
    if "cronspec" in converted and "cron" not in converted:
        converted = {("cron" if key == "cronspec" else key): value for key, value in converted.items()}
    if converted.get("count") == 0:
        del converted["count"]
        notes.append("schedule.count 0 (every firing) is no count here")
    return converted


def _matrix(matrix: Any, where: str, notes: list[str]) -> Any:
    if not isinstance(matrix, dict):
        return matrix
    converted = {}
    for key, values in matrix.items():
        bounds = values.get("range") if isinstance(values, dict) else None
        if (isinstance(bounds, list) and len(bounds) == 2
                and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            values = {**values, "range": [bounds[0], bounds[1] + 1]}
            notes.append(f"{where}.{key}: range {bounds} includes its stop there; here it is "
                         f"[{bounds[0]}, {bounds[1] + 1}] (stop excluded)")
        elif bounds is not None:
            notes.append(f"{where}.{key}: range {bounds!r} kept as it is: check it (here the stop is excluded)")
        converted[key] = values
    return converted


def _names(old_names: list[Any], notes: list[str]) -> dict[str, str]:
    """Each old step name and its name here (``_`` as ``-``); a clash is noted, not resolved."""
    names: dict[str, str] = {}
    for old in old_names:
        name = str(old).replace("_", "-")
        if name != old:
            notes.append(f"step {old}: named {name} (a step name has no '_' here)")
        if name in names.values():
            notes.append(f"step {old}: {name} is also the new name of another step: rename one")
        names[str(old)] = name
    return names


def _step(old_name: Any, names: dict[str, str], step: Any, notes: list[str]) -> dict[str, Any]:
    name = names[str(old_name)]
    if not isinstance(step, dict):
        return {"name": name, "work": step}
    converted: dict[str, Any] = {"name": name}
    for key, value in step.items():
        if key == "matrix":
            value = _matrix(value, f"step {name}: matrix", notes)
        elif key == "if" and isinstance(value, str):
            value = _STEP_REFERENCE.sub(lambda found: f"pipeline.{names.get(found.group(1), found.group(1))}.status",
                                        value)
        converted[key] = value
    return converted
