"""What ``workflow run`` was asked to do: :class:`WorkerConfig`, checked before anything starts.

Kept apart from the loop so the CLI, the tests and the loop share one validated shape,
and a wrong option fails at once with the field it names, not halfway through a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workflow.core.archiving import ArchiveSettings
from workflow.core.errors import ValidationError
from workflow.core.filters import WithdrawFilter
from workflow.core.work import validate_field
from workflow.worker.isolation import ISOLATIONS
from workflow.worker.runner import ARGSOURCES


@dataclass
class WorkerConfig:
    """What ``workflow run`` was asked to do (validated by :meth:`check`)."""

    pipelines: list[str]
    site: str = "local"
    function: str | None = None
    command: list[str] | None = None
    argsource: str = "parameters"  # "work": the function receives the whole Work, not **parameters
    lives: int = -1
    sleep: float = 30.0
    concurrency: int = 1
    isolation: str = "process"
    max_works_per_child: int | None = None  # process isolation: recycle a child after this many works
    filters: WithdrawFilter = field(default_factory=WithdrawFilter)  # take only matching works (--tag, …)
    connect: dict[str, Any] = field(default_factory=dict)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)  # where returned files go (the workspace)

    def check(self) -> WorkerConfig:
        """Raise ValidationError naming the first wrong option; ``self`` if all are right."""
        if not self.pipelines:
            raise ValidationError("pipeline", "name at least one pipeline (bucket) to work on")
        for name in self.pipelines:
            validate_field("pipeline", name)
        validate_field("site", self.site)
        self._check_what_runs()
        if self.lives == 0 or self.lives < -1:
            raise ValidationError("lives", f"expected a number of works >= 1, or -1 for no limit; got {self.lives}")
        if not 1 <= self.sleep <= 300:
            raise ValidationError("sleep", f"expected 1 to 300 seconds, got {self.sleep}")
        self._check_how_it_runs()
        return self

    def _check_what_runs(self) -> None:
        if self.function is not None and self.command is not None:
            raise ValidationError("function", "run a function or a command, not both")
        if self.function is not None:
            validate_field("function", self.function)
        if self.command is not None and not self.command:
            raise ValidationError("command", "expected a non-empty command line")
        if self.argsource not in ARGSOURCES:
            raise ValidationError("argsource", f"expected one of {', '.join(ARGSOURCES)}, got {self.argsource!r}")

    def _check_how_it_runs(self) -> None:
        if self.concurrency < 1:
            raise ValidationError("concurrency", f"expected at least 1, got {self.concurrency}")
        if self.isolation not in ISOLATIONS:
            raise ValidationError("isolation", f"expected one of {', '.join(ISOLATIONS)}, got {self.isolation!r}")
        if self.max_works_per_child is not None and self.max_works_per_child < 1:
            raise ValidationError(
                "max_works_per_child", f"expected at least 1 (or no limit), got {self.max_works_per_child}"
            )
        if self.isolation == "none" and self.concurrency != 1:
            raise ValidationError("concurrency", "isolation none runs works in the main thread: one at a time")
