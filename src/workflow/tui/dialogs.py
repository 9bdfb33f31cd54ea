"""Modal dialogs: confirm an action, give a cancel's reason, choose a priority, choose a bulk action, read
the keys (help)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import Integer
from textual.widgets import Button, Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask yes or no; dismissed with True only on an explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class CancelScreen(ModalScreen[str | None]):
    """Confirm a cancel and give its reason (optional: recorded in the work's history, as
    ``workflow cancel --reason`` does). Dismissed with the reason ("" for none) on enter,
    None when the operator keeps the work."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "keep", "Keep it")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            yield Input(placeholder="reason (optional), recorded in its history", id="reason")
            with Horizontal(classes="buttons"):
                yield Button("Cancel it (enter)", variant="error", id="cancel")
                yield Button("Keep it (esc)", variant="primary", id="keep")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one("#reason", Input).value.strip() if event.button.id == "cancel" else None)

    def action_keep(self) -> None:
        self.dismiss(None)


class PriorityScreen(ModalScreen[int | None]):
    """Choose a new priority (1-5, 5 first) for a work, or for many (``current`` None:
    they have each their own); None when abandoned."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "abandon", "Cancel")]

    def __init__(self, work_id: str, current: int | None) -> None:
        super().__init__()
        self.work_id = work_id
        self.current = current

    def compose(self) -> ComposeResult:
        now = f"now {self.current}; " if self.current is not None else ""
        with Vertical(classes="dialog"):
            yield Label(f"New priority for {self.work_id} ({now}1-5, 5 runs first):", classes="question")
            yield Input("" if self.current is None else str(self.current), id="priority", type="integer",
                        validators=[Integer(1, 5)])
            with Horizontal(classes="buttons"):
                yield Button("Set (enter)", variant="warning", id="set")
                yield Button("Cancel (esc)", variant="primary", id="abandon")

    def on_mount(self) -> None:
        self.query_one("#priority", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._choose()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "set":
            self._choose()
        else:
            self.dismiss(None)

    def _choose(self) -> None:
        field = self.query_one("#priority", Input)
        result = field.validate(field.value)
        if result is not None and not result.is_valid:
            self.notify("a priority is a whole number from 1 to 5", severity="error")
            return
        self.dismiss(int(field.value))

    def action_abandon(self) -> None:
        self.dismiss(None)


class BulkScreen(ModalScreen[str | None]):
    """Choose what to do to every work a search matches: ``cancel``, ``requeue`` (each at
    its own priority), ``priority`` (requeue at a new one) or ``delete``; None to leave
    them. Only the choice: the dialog that follows confirms it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "choose('cancel')", "Cancel them"),
        Binding("r", "choose('requeue')", "Requeue them"),
        Binding("p", "choose('priority')", "Requeue at a priority"),
        Binding("d", "choose('delete')", "Delete them"),
        Binding("escape,n", "choose(None)", "Leave them"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (c)", variant="error", id="cancel")
                yield Button("Requeue (r)", variant="warning", id="requeue")
                yield Button("Priority (p)", variant="warning", id="priority")
                yield Button("Delete (d)", variant="error", id="delete")
                yield Button("Leave (esc)", variant="primary", id="leave")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "leave" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)


class HelpScreen(ModalScreen[None]):
    """Every key of the view underneath, and the syntax of its search or filter."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, keys: list[tuple[str, str]], syntax: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.keys = keys
        self.syntax = syntax

    def compose(self) -> ComposeResult:
        width = max((len(key) for key, _ in self.keys), default=0)
        lines = [f"{key:>{width}}  {what}" for key, what in self.keys]
        with VerticalScroll(classes="dialog help"):
            yield Label("Keys", classes="question")
            yield Static("\n".join(lines), id="keys")
            if self.syntax is not None:
                title, syntax = self.syntax
                yield Label(title, classes="question")
                yield Static(syntax, id="syntax")
            yield Label("escape closes", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
