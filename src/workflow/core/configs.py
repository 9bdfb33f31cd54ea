"""Pipeline configurations: an analysis chain written down as a YAML file, checked and expanded.

A configuration names a chain of **steps**, each a template of a :class:`~workflow.core.work.Work`
expanded over a **matrix** (the cartesian product of its values) and ordered in **stages**.
Deploying it starts a **run**: every step's works are deposited at once, each waiting for the
works of the earlier stages (the precursor machinery of :mod:`workflow.core.waits` releases
them). Kept pure: this module reads text and returns works; the log layer
(:mod:`workflow.log.configs`) writes them. The format, close to the one CHIME/FRB users know::

    name: localise                 # letters, digits and '-' (one subject token)
    defaults:                      # Work fields for every step (a step's `work` wins)
      site: local
      retries: 1
    matrix:                        # run-wide: every step is expanded over it
      event: [12345, 67890]
    schedule:                      # optional: a run at each firing
      cron: "0 2 * * *"            # (or cronspec:) 5 fields, minute first, or 6, seconds first; @daily…
      timezone: America/Vancouver  # optional IANA zone the cron is read in (DST included); default UTC
      count: 3                     # after that many runs the schedule is expired
    steps:
      - name: fetch                # unique; names the works (config.step)
        stage: 1                   # a stage runs once every earlier stage succeeded
        work:
          pipeline: fetch
          function: chime.fetch
          parameters: {event: "${{ matrix.event }}"}
      - name: localise
        stage: 2
        matrix:                    # per step, combined with the run-wide one
          beam: {range: [0, 4]}    # 0 1 2 3 (range: N, [start, stop] or [start, stop, step])
        runs_on: chime             # the works' site
        work: {pipeline: localise, parameters: {beam: "${{ matrix.beam }}"}}
      - name: tell
        if: failure                # success (default) | failure | always | an expression:
        work: {pipeline: notify}
      - name: refetch
        stage: 2
        if: ${{ pipeline.fetch.status == 'failure' }}   # over earlier steps (workflow.core.conditions)
        work: {pipeline: fetch, function: chime.fetch_again}

**Stages and ``if``.** A step with ``stage: s`` waits for every work of the steps of earlier
stages. ``if: success`` (the default) runs it once they all succeeded, and skips it (a
``Cancelled`` naming the step that did not succeed) as soon as one did not; ``if: failure``
runs it once they all finished and at least one did not succeed (else it is skipped);
``if: always`` runs it once they all finished, whatever their outcome. A step with ``if``
and no ``stage`` follows every staged step: it is judged on the whole run. A step with
neither is in stage 1. A first-stage step has nothing to follow, so ``if: failure`` there
is an error.

**Expressions.** ``if: ${{ pipeline.fetch.status == 'failure' }}`` (``==``/``!=``, ``and``,
``or``, ``not``, parentheses, ``success()``/``failure()``/``always()``:
:mod:`workflow.core.conditions`) is read at deploy, its errors located like any other. The
step waits for every work of the steps it follows (its stage's rule: the earlier stages,
or every staged step) to *finish*, whatever the outcome; then the expression alone decides:
true, it runs; false, it is skipped (a ``Cancelled`` saying the expression and the statuses
it was judged on). A step it names must run before it, and is judged, like results, on its
works whose combination agrees with the step's own; ``success()`` and ``failure()`` judge
every step it follows. The works carry the expression in ``config["if"]`` and the works of
each step it names in ``config["if_steps"]``.

**Substitution.** ``${{ matrix.x }}`` in any text of a step's ``work`` (or ``runs_on``) is
replaced by that combination's value: alone in a text, it takes the value's own type
(``"${{ matrix.beam }}"`` is the number 3), inside a longer text it is written in.

**Results.** ``${{ steps.fetch.results.path }}`` is the ``path`` that step ``fetch`` returned,
for a step that runs after it: the works of ``fetch`` whose combination agrees with the
reader's on their shared matrix keys (one: its value; several: the list), listed in the
reader's ``config["inputs"]`` and resolved when it is released (:func:`resolve_inputs`).

**Errors** are reported like a compiler's: every problem of the file at once, each as
``file:line:column: what was expected`` (:class:`ConfigError`); a file with any problem
deploys nothing.

The works of a run carry it in their ``config``: ``parent`` (the run's id: the withdraw
filter and ``workflow ls --run``), ``step`` and ``configuration``; ``if`` when not
``success`` (the rule :mod:`workflow.core.waits` waits by). Their ids are derived from the
run's id, the step and the combination (:func:`run_work_id`), so a retried deposit of a
run deposits nothing twice and every reader finds a run's works without a query.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import yaml
from ulid import ULID

from workflow.core import conditions
from workflow.core.errors import ValidationError, WorkflowError
from workflow.core.schedules import check_timezone, schedule_spec
from workflow.core.waits import CONDITIONS, Condition
from workflow.core.work import NAME_PATTERN, Work

_TOP_KEYS = ("name", "defaults", "matrix", "schedule", "steps")
_STEP_KEYS = ("name", "stage", "work", "matrix", "if", "runs_on")
_SCHEDULE_KEYS = ("cron", "cronspec", "count", "timezone")  # cronspec: the name in the system users come from
#: Work fields a run sets itself: a file may not.
_MANAGED = ("id", "status", "precursors", "attempt", "creation", "start", "stop", "results")
#: Keys of a work's ``config`` a run sets (see the module).
RUN_KEYS = ("parent", "step", "configuration", "if", "if_steps")
_NAME = re.compile(NAME_PATTERN)
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_MATRIX_REFERENCE = re.compile(r"^matrix\.([A-Za-z_][A-Za-z0-9_-]*)$")
_RESULTS_REFERENCE = re.compile(r"^steps\.([A-Za-z0-9-]+)\.results\.([A-Za-z0-9_-]+)$")
#: Works one configuration may expand to (a typo like range: 1e9 must not fill the log).
MAX_WORKS = 100_000


# -- errors --------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Problem:
    """One problem of a file, where it is (1-based line and column)."""

    line: int
    column: int
    message: str

    def located(self, file: str) -> str:
        return f"{file}:{self.line}:{self.column}: {self.message}"


class ConfigError(ValidationError):
    """A configuration file with problems: every one of them, each with its place."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = sorted(set(problems))
        lines = [problem.located(file) for problem in self.problems]
        WorkflowError.__init__(self, "\n".join(lines))
        self.field = "configuration"

    def __str__(self) -> str:
        return str(self.args[0])


# -- the parsed file -------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When a configuration runs by itself: the server's schedule spec, and how many runs."""

    spec: str
    count: int | None = None
    timezone: str | None = None  # IANA name the cron is read in; None: UTC


@dataclass(frozen=True)
class Step:
    """One step as written, with its matrix (run-wide values included) and its work template."""

    name: str
    stage: int | None  # None: a conditional step that follows every staged step
    condition: Condition
    matrix: dict[str, list[Any]]
    work: dict[str, Any]  # Work fields, ``${{ … }}`` not yet substituted
    inputs: tuple[str, ...] = ()  # the steps whose results its work reads (``${{ steps.X.results.K }}``)
    expression: str | None = None  # its ``if`` over earlier steps, canonical (``condition`` is then ``always``)
    judges: tuple[str, ...] = ()  # the steps that expression names

    @property
    def rule(self) -> str:
        """Its ``if`` as shown: the rule, or the expression."""
        return self.condition if self.expression is None else f"${{{{ {self.expression} }}}}"


@dataclass(frozen=True)
class Config:
    """A configuration, checked: its steps in the order they run (stage, then as written)."""

    name: str
    steps: list[Step]
    schedule: Schedule | None = None
    source: str = ""  # the text it was read from (recorded in the log at deploy)

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)


@dataclass(frozen=True)
class PlannedWork:
    """One work of a run: its step, its matrix combination, and the work itself."""

    step: str
    combination: dict[str, Any]
    work: Work


@dataclass
class Plan:
    """The works one run deposits, in an order where every precursor comes first."""

    config: Config
    run: str
    works: list[PlannedWork] = field(default_factory=list)

    def of_step(self, name: str) -> list[PlannedWork]:
        return [planned for planned in self.works if planned.step == name]


# -- reading ---------------------------------------------------------------------------------


class _Reader:
    """Turns YAML nodes into values, noting every problem with its place."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.inputs: list[tuple[str, tuple[str, yaml.Node]]] = []  # (step, (step it reads, where))
        self.judged: list[tuple[str, str, yaml.Node, int]] = []  # (step, step its if judges, if's node, offset)
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: yaml.Node | None, message: str) -> None:
        mark = node.start_mark if node is not None else None
        self.problems.append(Problem(mark.line + 1 if mark else 1, mark.column + 1 if mark else 1, message))

    def problem_at(self, node: yaml.Node, offset: int, message: str) -> None:
        """A problem ``offset`` characters into a one-line text node (after its quote, if quoted)."""
        mark = node.start_mark
        quoted = 1 if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"') else 0
        self.problems.append(Problem(mark.line + 1, mark.column + 1 + quoted + offset, message))

    def value(self, node: yaml.Node) -> Any:
        """The plain value of a node (mappings, lists, scalars), as yaml.safe_load gives it."""
        if isinstance(node, yaml.MappingNode):
            return {self.value(key): self.value(item) for key, item in node.value}
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item) for item in node.value]
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...] | None) -> dict[str, tuple[yaml.Node,
                                                                                                        yaml.Node]]:
        """A mapping's entries by key (key node, value node); unknown or repeated keys noted."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} is a mapping (key: value lines), got {_kind(node)}")
            return {}
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                self.problem(key_node, f"a key of {what} is text, got {key!r}")
                continue
            if key in entries:
                self.problem(key_node, f"{what}: {key!r} is given twice")
                continue
            if allowed is not None and key not in allowed:
                self.problem(key_node, f"{what} has no key {key!r}; expected one of {', '.join(allowed)}")
                continue
            entries[key] = (key_node, value_node)
        return entries


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}" if node.value != "" else "nothing"


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no types
    """PyYAML's safe loader with YAML 1.2's booleans: only ``true``/``false``. YAML 1.1's
    ``on``/``off``/``yes``/``no`` would turn a matrix key or value named ``on`` into a
    boolean (``matrix: {on: [1]}`` would have no key ``on``)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
#: The loader a configuration is read with (also by :mod:`workflow.core.config_convert`).
Yaml12Loader = _Loader


def parse(text: str, file: str = "<config>") -> Config:
    """The configuration in ``text`` (read from ``file``, named in errors), checked and
    with every step's works buildable. ConfigError lists every problem found."""
    reader = _Reader()
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError(file, [Problem(line, column, f"not valid YAML: {error.problem or error}")]) from None
    except yaml.YAMLError as error:
        raise ConfigError(file, [Problem(1, 1, f"not valid YAML: {error}")]) from None
    if root is None:
        raise ConfigError(file, [Problem(1, 1, "the file is empty; a configuration needs a name and steps")])
    if isinstance(root, yaml.MappingNode):  # a key of the old system's files with no counterpart here
        for key_node, _ in root.value:
            if getattr(key_node, "value", None) == "deployments":
                reader.problem(key_node, "deployments (images, replicas) are not part of a configuration here: "
                                         "start workers with `workflow run`, and remove this key")
    top = reader.mapping(root, "a configuration", (*_TOP_KEYS, "deployments"))
    top.pop("deployments", None)
    name = _name(reader, top, root)
    defaults = _defaults(reader, top)
    run_matrix = _matrix(reader, top["matrix"][1], "matrix") if "matrix" in top else {}
    schedule = _schedule(reader, top["schedule"][1]) if "schedule" in top else None
    steps = _steps(reader, top, root, defaults, run_matrix)
    if reader.problems:
        raise ConfigError(file, reader.problems)
    steps.sort(key=lambda step: (step.stage is None, step.stage or 0))  # stable: as written within a stage
    return Config(name=name, steps=steps, schedule=schedule, source=text)


def _name(reader: _Reader, top: dict[str, tuple[yaml.Node, yaml.Node]], root: yaml.Node) -> str:
    if "name" not in top:
        reader.problem(root, "a configuration needs a name (name: letters, digits and '-')")
        return ""
    node = top["name"][1]
    name = reader.value(node)
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 57:
        reader.problem(node, f"name is 1-57 letters, digits and '-', got {name!r}")
        return ""
    return name


def _defaults(reader: _Reader, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> dict[str, Any]:
    if "defaults" not in top:
        return {}
    return _work_fields(reader, top["defaults"][1], "defaults")


def _work_fields(reader: _Reader, node: yaml.Node, what: str) -> dict[str, Any]:
    """Work fields as written; unknown and managed fields noted where they are."""
    entries = reader.mapping(node, what, None)
    fields: dict[str, Any] = {}
    for key, (key_node, value_node) in entries.items():
        if key not in Work.__struct_fields__:
            reader.problem(key_node, f"a work has no field {key!r}; its fields are {', '.join(_settable())}")
        elif key in _MANAGED:
            reader.problem(key_node, f"{key} is set by the run, not by the file")
        else:
            fields[key] = (reader.value(value_node), value_node)
    return fields


def _settable() -> list[str]:
    return [name for name in Work.__struct_fields__ if name not in _MANAGED]


def _matrix(reader: _Reader, node: yaml.Node, what: str) -> dict[str, list[Any]]:
    """A matrix: each key a non-empty list of values, or ``{range: …}``."""
    matrix: dict[str, list[Any]] = {}
    for key, (key_node, value_node) in reader.mapping(node, what, None).items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", key):
            reader.problem(key_node, f"{what}: a matrix key is a name (letters, digits, '_', '-'), got {key!r}")
            continue
        if isinstance(value_node, yaml.MappingNode):
            values = _range(reader, value_node, f"{what}.{key}")
        elif isinstance(value_node, yaml.SequenceNode):
            values = reader.value(value_node)
        else:
            reader.problem(value_node, f"{what}.{key} is a list of values or {{range: [start, stop]}}, "
                                       f"got {_kind(value_node)}")
            continue
        if values is None:
            continue
        if not values:
            reader.problem(value_node, f"{what}.{key} has no values: a step over it would make no work")
            continue
        if len({msgspec.json.encode(value) for value in values}) != len(values):
            reader.problem(value_node, f"{what}.{key} lists a value twice: each combination is run once")
            continue
        matrix[key] = values
    return matrix


def _range(reader: _Reader, node: yaml.MappingNode, what: str) -> list[Any] | None:
    entries = reader.mapping(node, what, ("range",))
    if "range" not in entries:
        if not node.value:  # else its unknown keys were noted
            reader.problem(node, f"{what}: a mapping here is {{range: [start, stop]}}")
        return None
    range_node = entries["range"][1]
    bounds = reader.value(range_node)
    if isinstance(bounds, int) and not isinstance(bounds, bool):
        bounds = [0, bounds]
    if (not isinstance(bounds, list) or not 2 <= len(bounds) <= 3
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
            or (len(bounds) == 3 and bounds[2] == 0)):
        reader.problem(range_node, f"{what}: range is N, [start, stop] or [start, stop, step] in whole numbers "
                                   f"(stop excluded, step not 0), got {bounds!r}")
        return None
    values = list(range(*bounds))
    if len(values) > MAX_WORKS:
        reader.problem(range_node, f"{what}: range gives {len(values):,} values; at most {MAX_WORKS:,} works a run")
        return None
    return values


def _schedule(reader: _Reader, node: yaml.Node) -> Schedule | None:
    entries = reader.mapping(node, "schedule", _SCHEDULE_KEYS)
    if not entries:
        return None
    if "cronspec" in entries:
        if "cron" in entries:
            reader.problem(entries["cronspec"][0], "schedule: give cron or cronspec (the same), not both")
        else:
            entries["cron"] = entries.pop("cronspec")
    spec = None
    if "cron" not in entries:
        reader.problem(node, 'schedule needs a cron: 5 fields, minute first ("0 2 * * *"), or @daily…')
    else:
        cron_node = entries["cron"][1]
        cron = reader.value(cron_node)
        try:
            spec = schedule_spec(cron=five_to_six(cron)) if isinstance(cron, str) else None
        except ValidationError as error:
            reader.problem(cron_node, f"schedule.{error}")
        else:
            if spec is None:
                reader.problem(cron_node, f"schedule.cron is text like \"0 2 * * *\", got {cron!r}")
    count = None
    if "count" in entries:
        count_node = entries["count"][1]
        count = reader.value(count_node)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            reader.problem(count_node, f"schedule.count is a whole number of runs, 1 or more, got {count!r}")
            count = None
    timezone = None
    if "timezone" in entries:
        zone_node = entries["timezone"][1]
        zone = reader.value(zone_node)
        try:
            timezone = check_timezone(zone) if isinstance(zone, str) else None
        except ValidationError as error:
            reader.problem(zone_node, f"schedule.{error}")
        else:
            if not isinstance(zone, str):
                reader.problem(zone_node, f"schedule.timezone is an IANA name like America/Vancouver, got {zone!r}")
    return None if spec is None else Schedule(spec, count, timezone)


def five_to_six(cron: str) -> str:
    """A cron as users write it (5 fields, minute first) in the server's 6 (seconds first);
    6 fields and ``@…`` shorthands are returned as they are."""
    fields = cron.split()
    return " ".join(["0", *fields]) if len(fields) == 5 else cron


def _steps(
    reader: _Reader, top: dict[str, tuple[yaml.Node, yaml.Node]], root: yaml.Node,
    defaults: dict[str, Any], run_matrix: dict[str, list[Any]],
) -> list[Step]:
    if "steps" not in top:
        reader.problem(root, "a configuration needs steps (a list of steps, each with a name and a work)")
        return []
    node = top["steps"][1]
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        reader.problem(node, f"steps is a non-empty list of steps, got {_kind(node)}")
        return []
    steps: list[Step] = []
    seen: set[str] = set()
    for step_node in node.value:
        step = _step(reader, step_node, defaults, run_matrix, seen)
        if step is not None:
            steps.append(step)
    stages = {step.name: step.stage for step in steps}
    for name, (reference, place) in reader.inputs:  # each step read must run before the reader
        if reference not in seen:
            reader.problem(place, f"step {name}: ${{{{ steps.{reference}.results… }}}} names no step")
        elif name in stages and not _runs_before(stages.get(reference, 0), stages[name]):
            reader.problem(place, f"step {name}: reads the results of step {reference}, which does not run "
                                  "before it (only a step of an earlier stage does; a step without a stage "
                                  "reads any staged step)")
    for name, judged, place, offset in reader.judged:  # each step an if judges runs before it
        if judged not in seen:
            reader.problem_at(place, offset, f"step {name}: if: pipeline.{judged}.status names no step")
        elif judged == name:
            reader.problem_at(place, offset, f"step {name}: if judges step {name} itself, which has not run yet")
        elif name in stages and not _runs_before(stages.get(judged, 0), stages[name]):
            reader.problem_at(place, offset, f"step {name}: if judges step {judged}, which does not run before it "
                                             "(only a step of an earlier stage does; a step without a stage "
                                             "follows every staged step)")
    return steps


def _runs_before(reference: int | None, reader: int | None) -> bool:
    if reference is None:
        return False
    return reader is None or reference < reader


def _step(
    reader: _Reader, node: yaml.Node, defaults: dict[str, Any], run_matrix: dict[str, list[Any]], seen: set[str],
) -> Step | None:
    before = len(reader.problems)
    entries = reader.mapping(node, "a step", _STEP_KEYS)
    if not entries:
        return None
    name = ""
    if "name" not in entries:
        reader.problem(node, "a step needs a name (letters, digits and '-')")
    else:
        name_node = entries["name"][1]
        name = reader.value(name_node)
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 64:
            reader.problem(name_node, f"a step's name is 1-64 letters, digits and '-', got {name!r}")
        elif name in seen:
            reader.problem(name_node, f"step {name!r} is named twice: step names are unique")
        seen.add(str(name))
    condition, expression = _condition(reader, entries["if"][1], name) if "if" in entries else ("success", None)
    stage: int | None = 1 if "if" not in entries else None
    if "stage" in entries:
        stage_node = entries["stage"][1]
        stage = reader.value(stage_node)
        if not isinstance(stage, int) or isinstance(stage, bool) or stage < 1:
            reader.problem(stage_node, f"stage is a whole number, 1 or more, got {stage!r}")
            stage = 1
        elif stage == 1 and expression is not None:
            reader.problem(entries["if"][0], "a first-stage step has no earlier step for its if to judge (give it "
                                             "a later stage, or no stage to follow every step)")
        elif stage == 1 and condition == "failure":
            reader.problem(entries["if"][0], "a first-stage step has no earlier step to fail: if: failure never "
                                             "runs it (give it a later stage, or no stage to follow every step)")
    matrix = dict(run_matrix)
    if "matrix" in entries:
        matrix.update(_matrix(reader, entries["matrix"][1], f"step {name}: matrix"))
    work: dict[str, Any] = dict(defaults)
    if "work" not in entries:
        reader.problem(node, f"step {name}: needs a work (the Work fields of its works: pipeline, function…)")
    else:
        work.update(_work_fields(reader, entries["work"][1], f"step {name}: work"))
    if "runs_on" in entries:
        work["site"] = (reader.value(entries["runs_on"][1]), entries["runs_on"][1])
    _check_works(reader, node, name, matrix, work)
    if len(reader.problems) > before:
        return None
    inputs = tuple(dict.fromkeys(reference for step, (reference, _) in reader.inputs if step == name))
    judged = tuple(dict.fromkeys(c.step for c in conditions.steps_named(expression))) if expression else ()
    return Step(name=name, stage=stage, condition=condition, matrix=matrix,
                work={key: value for key, (value, _) in work.items()}, inputs=inputs,
                expression=None if expression is None else conditions.render(expression), judges=judged)


def _condition(reader: _Reader, node: yaml.Node, name: str) -> tuple[Condition, conditions.Expression | None]:
    """A step's ``if``: a rule (``success``, ``failure``, ``always``, also written as
    ``${{ failure() }}``), or an expression over earlier steps (waiting as ``always``)."""
    written = reader.value(node)
    if written in CONDITIONS:
        return cast(Condition, written), None
    if not isinstance(written, str) or not written.strip() or re.fullmatch(r"\s*[A-Za-z_][\w-]*\s*", written):
        reader.problem(node, f"if is success, failure, always or an expression such as "
                             f"${{{{ pipeline.fetch.status == 'success' }}}}, got {written!r}")
        return "success", None
    try:
        expression = conditions.parse(written)
    except conditions.ExpressionError as error:
        reader.problem_at(node, error.offset, f"step {name}: if: {error.message}")
        return "success", None
    if isinstance(expression, conditions.Call):  # ${{ failure() }}: the rule itself
        return cast(Condition, expression.name), None
    for comparison in conditions.steps_named(expression):
        reader.judged.append((name, comparison.step, node, comparison.at))
    return "always", expression


def _check_works(reader: _Reader, node: yaml.Node, name: str, matrix: dict[str, list[Any]],
                 work: dict[str, tuple[Any, yaml.Node]]) -> None:
    """Every reference resolves, and the first combination builds a valid Work (the
    others differ only in substituted values, each checked when the run is planned)."""
    before = len(reader.problems)
    count = 1
    for values in matrix.values():
        count *= len(values)
    if count > MAX_WORKS:
        reader.problem(node, f"step {name}: its matrix makes {count:,} works; at most {MAX_WORKS:,} a run")
        return
    for key, (value, value_node) in work.items():
        for reference in _references(value):
            match = _MATRIX_REFERENCE.match(reference)
            results = _RESULTS_REFERENCE.match(reference)
            if results is not None and key != "config":
                reader.inputs.append((name, (results.group(1), value_node)))
            elif match is None:
                reader.problem(value_node, f"step {name}: {key}: unknown reference ${{{{ {reference} }}}}; "
                                           "expected ${{ matrix.NAME }} or ${{ steps.STEP.results.KEY }}")
            elif match.group(1) not in matrix:
                known = ", ".join(matrix) or "none"
                reader.problem(value_node, f"step {name}: {key}: no matrix value {match.group(1)!r} "
                                           f"(this step's matrix has: {known})")
    if "pipeline" not in work:
        reader.problem(node, f"step {name}: its work needs a pipeline (in the step's work or in defaults)")
    if len(reader.problems) > before:
        return
    first = {key: values[0] for key, values in matrix.items()}
    try:
        build_work({key: value for key, (value, _) in work.items()}, first)
    except ValidationError as error:
        place = work.get(error.field, (None, node))[1]
        reader.problem(place, f"step {name}: {error}")


def _references(value: Any) -> list[str]:
    if isinstance(value, str):
        return _EXPRESSION.findall(value)
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _references(item)]
    return []


# -- expansion ---------------------------------------------------------------------------------


def combinations(matrix: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the matrix's values, each once (one empty one for no matrix)."""
    keys = list(matrix)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(matrix[k] for k in keys))]


def substitute(value: Any, combination: dict[str, Any]) -> Any:
    """``value`` with each ``${{ matrix.x }}`` replaced (see the module)."""
    if isinstance(value, str):
        whole = _EXPRESSION.fullmatch(value.strip())
        if whole is not None:
            match = _MATRIX_REFERENCE.match(whole.group(1))
            if match is not None and match.group(1) in combination:
                return combination[match.group(1)]

        def written(found: re.Match[str]) -> str:
            match = _MATRIX_REFERENCE.match(found.group(1))
            if match is None or match.group(1) not in combination:
                return found.group(0)
            item = combination[match.group(1)]
            return item if isinstance(item, str) else msgspec.json.encode(item).decode()

        return _EXPRESSION.sub(written, value)
    if isinstance(value, dict):
        return {key: substitute(item, combination) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, combination) for item in value]
    return value


def build_work(template: dict[str, Any], combination: dict[str, Any], **managed: Any) -> Work:
    """The Work of one combination of a step (ValidationError naming the field if bad)."""
    fields = substitute(template, combination)
    fields.update(managed)
    return Work.from_payload(fields)


def run_work_id(run: str, step: str, index: int) -> str:
    """The id of a run's work: the run's time, then a hash of the run, the step and the
    combination's index. The same run, step and index give the same id anywhere."""
    millis = ULID.from_str(run).milliseconds
    digest = hashlib.sha256(f"{run}/{step}/{index}".encode()).digest()
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + digest[:10]))


def plan(config: Config, run: str, now: float) -> Plan:
    """The works of one run of ``config`` (``run``: a ULID, the run's id), in stage order:
    every work waits for the works of the earlier stages (all staged ones, for a step
    with ``if`` and no stage), by its step's condition. ValidationError (naming the step
    and the combination) if a combination's substituted values make a bad work."""
    result = Plan(config, run)
    by_stage: dict[int, list[str]] = {}
    made_by_step: dict[str, list[PlannedWork]] = {}
    for step in config.steps:
        if step.stage is None:
            precursors = [work_id for ids in by_stage.values() for work_id in ids]
        else:
            precursors = [work_id for stage, ids in by_stage.items() if stage < step.stage for work_id in ids]
        made: list[str] = []
        for index, combination in enumerate(combinations(step.matrix)):
            work_id = run_work_id(run, step.name, index)
            run_config = dict(substitute(step.work.get("config") or {}, combination))
            run_config.update(parent=run, step=step.name, configuration=config.name)
            if step.expression is not None:
                run_config["if"] = step.expression
                run_config["if_steps"] = {name: _judged(made_by_step[name], combination, step.name, name)
                                          for name in step.judges}
            elif step.condition != "success":
                run_config["if"] = step.condition
            if step.inputs:
                run_config["inputs"] = {name: _inputs(made_by_step[name], combination) for name in step.inputs}
            try:
                work = build_work(step.work, combination, id=work_id, creation=now, config=run_config,
                                  precursors=list(precursors) or None)
            except ValidationError as error:
                raise ValidationError(error.field, f"step {step.name} {combination}: {error}") from None
            result.works.append(PlannedWork(step.name, combination, work))
            made_by_step.setdefault(step.name, []).append(result.works[-1])
            made.append(work_id)
        if step.stage is not None:
            by_stage.setdefault(step.stage, []).extend(made)
    return result


def _inputs(works: list[PlannedWork], combination: dict[str, Any]) -> str | list[str]:
    """The works of a step whose results a work reads: those whose combination agrees with
    the reader's on the matrix keys they share; one work's id, or a list of ids (in plan order)."""
    matching = [planned.work.id for planned in works
                if all(combination[key] == value for key, value in planned.combination.items() if key in combination)]
    ids = [work_id for work_id in matching if work_id is not None]
    return ids[0] if len(ids) == 1 else ids


def _judged(works: list[PlannedWork], combination: dict[str, Any], step: str, judged: str) -> list[str]:
    """The works of a step an ``if`` judges: as for results (:func:`_inputs`), always a list;
    ValidationError if none agrees with ``combination`` (there would be nothing to judge)."""
    found = _inputs(works, combination)
    found = [found] if isinstance(found, str) else found
    if not found:
        raise ValidationError("if", f"step {step} {combination}: its if judges step {judged}, none of whose works "
                                    "has the same values for the matrix keys they share")
    return found


def inputs_of(work: Work) -> list[str]:
    """The ids of the works whose results ``work`` reads (``config["inputs"]``), in order."""
    found: list[str] = []
    for ids in ((work.config or {}).get("inputs") or {}).values():
        found.extend([ids] if isinstance(ids, str) else ids)
    return list(dict.fromkeys(found))


def resolve_inputs(work: Work, results: dict[str, dict[str, Any] | None]) -> Work:
    """``work`` with each ``${{ steps.X.results.K }}`` replaced by what step X's work gave
    (results of the works named in ``config["inputs"]``, read when the work is released):
    one value for one work, the list of values for several. ValidationError naming the
    step, the key and the work if a result is missing: a step does not run on a guess."""
    inputs: dict[str, str | list[str]] = (work.config or {}).get("inputs") or {}
    if not inputs:
        return work

    def value(reference: str) -> Any:
        match = _RESULTS_REFERENCE.match(reference)
        assert match is not None
        step, key = match.groups()
        ids = inputs.get(step)
        if ids is None:
            raise ValidationError("parameters", f"${{{{ {reference} }}}}: step {step} is not among its inputs")
        values = []
        for work_id in [ids] if isinstance(ids, str) else ids:
            given = results.get(work_id) or {}
            if key not in given:
                raise ValidationError(
                    "parameters", f"step {step} gave no result {key!r} (work {work_id}: {sorted(given) or 'none'})")
            values.append(given[key])
        return values[0] if isinstance(ids, str) else values

    def resolved(item: Any) -> Any:
        if isinstance(item, str):
            whole = _EXPRESSION.fullmatch(item.strip())
            if whole is not None and _RESULTS_REFERENCE.match(whole.group(1)):
                return value(whole.group(1))

            def written(found: re.Match[str]) -> str:
                if not _RESULTS_REFERENCE.match(found.group(1)):
                    return found.group(0)
                got = value(found.group(1))
                return got if isinstance(got, str) else msgspec.json.encode(got).decode()

            return _EXPRESSION.sub(written, item)
        if isinstance(item, dict):
            return {key: resolved(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [resolved(inner) for inner in item]
        return item

    fields = work.payload
    config = fields.pop("config")
    fields = resolved(fields)
    fields["config"] = config
    return Work.from_payload(fields)
