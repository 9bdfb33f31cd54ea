"""``if:`` expressions over earlier steps, as CHIME/FRB users write them in their configurations.

A step of a configuration may run on what became of earlier steps::

    if: ${{ pipeline.fetch.status == 'failure' }}
    if: ${{ pipeline.fetch.status == 'success' and not (pipeline.beams.status != 'success') }}
    if: ${{ failure() || pipeline.fetch.status == 'cancelled' }}

The language is small on purpose and never handed to Python's ``eval``: a comparison of one
step's status with a quoted status (``pipeline.<step>.status == 'success'`` or ``!=``, either
side first), the functions ``success()``, ``failure()`` and ``always()`` (every step the step
follows succeeded; one did not; true), combined with ``and``/``&&``, ``or``/``||``,
``not``/``!`` and parentheses (``not`` binds tightest, then ``and``, then ``or``). The
``${{ … }}`` around it may be left out. A step's status, once it finished, is ``success``
(every work of it succeeded), ``failure`` (one failed) or ``cancelled`` (none failed, one
was cancelled or skipped).

:func:`parse` reads one expression, raising :class:`ExpressionError` with the offset of
what is wrong (the configuration reader turns it into ``file:line:column``);
:func:`evaluate` judges it on the statuses of the steps it names. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: What ``pipeline.<step>.status`` can be once the step finished.
STATUSES = ("success", "failure", "cancelled")
#: The functions an expression may call (each also a rule of its own: ``if: failure``).
FUNCTIONS = ("success", "failure", "always")

_WRAPPED = re.compile(r"^\s*\$\{\{(.*)\}\}\s*$", re.DOTALL)
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<operator>==|!=|&&|\|\||!|\(|\)|\.)
  | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
""", re.VERBOSE)
_AND, _OR, _NOT = ("and", "&&"), ("or", "||"), ("not", "!")


class ExpressionError(ValueError):
    """An expression that cannot be read: ``offset`` is where in its text (0-based)."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


@dataclass(frozen=True)
class StepIs:
    """``pipeline.<step>.status == '<status>'`` (``equal`` False: ``!=``)."""

    step: str
    status: str
    equal: bool = True
    at: int = field(default=0, compare=False)  # where ``pipeline`` begins in the text


@dataclass(frozen=True)
class Call:
    """``success()``, ``failure()`` or ``always()``."""

    name: str


@dataclass(frozen=True)
class Not:
    operand: Expression


@dataclass(frozen=True)
class And:
    left: Expression
    right: Expression


@dataclass(frozen=True)
class Or:
    left: Expression
    right: Expression


Expression = StepIs | Call | Not | And | Or


@dataclass(frozen=True)
class _Token:
    kind: str  # string | operator | name | end
    text: str
    at: int


def unwrap(text: str) -> tuple[str, int]:
    """The expression inside ``${{ … }}`` and its offset in ``text`` (``text`` itself if unwrapped)."""
    match = _WRAPPED.match(text)
    return (match.group(1), match.start(1)) if match else (text, 0)


def _tokens(text: str, at: int) -> list[_Token]:
    """The tokens of ``text[at:]``, each with its offset in ``text``."""
    found: list[_Token] = []
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            quote = text[at] in "'\""
            raise ExpressionError(at, "a text that is never closed (quote it on both sides: 'success')" if quote
                                  else f"unexpected {text[at]!r}; an expression is made of "
                                       "pipeline.STEP.status, quoted statuses, ==, !=, and, or, not, ( ) and "
                                       "success(), failure(), always()")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            found.append(_Token(kind, match.group(), at))
        at = match.end()
    found.append(_Token("end", "", len(text)))
    return found


class _Parser:
    """Recursive descent over the tokens (the grammar is in the module's docstring)."""

    def __init__(self, text: str, start: int) -> None:
        self.tokens = _tokens(text, start)
        self.position = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.position]

    def take(self) -> _Token:
        token = self.token
        self.position += 1
        return token

    def expect(self, text: str, what: str) -> _Token:
        if self.token.text != text or self.token.kind == "string":
            raise ExpressionError(self.token.at, f"expected {what}, got {_shown(self.token)}")
        return self.take()

    def whole(self) -> Expression:
        if self.token.kind == "end":
            raise ExpressionError(self.token.at, "the expression is empty; write e.g. "
                                                 "pipeline.fetch.status == 'success'")
        expression = self.disjunction()
        if self.token.kind != "end":
            raise ExpressionError(self.token.at, f"expected and, or or the end, got {_shown(self.token)}")
        return expression

    def disjunction(self) -> Expression:
        expression = self.conjunction()
        while self.token.kind != "string" and self.token.text in _OR:
            self.take()
            expression = Or(expression, self.conjunction())
        return expression

    def conjunction(self) -> Expression:
        expression = self.negation()
        while self.token.kind != "string" and self.token.text in _AND:
            self.take()
            expression = And(expression, self.negation())
        return expression

    def negation(self) -> Expression:
        if self.token.kind != "string" and self.token.text in _NOT:
            self.take()
            return Not(self.negation())
        return self.primary()

    def primary(self) -> Expression:
        token = self.token
        if token.kind == "operator" and token.text == "(":
            self.take()
            inner = self.disjunction()
            self.expect(")", "')' to close the '('")
            return inner
        if token.kind == "name" and token.text in FUNCTIONS and self.tokens[self.position + 1].text == "(":
            self.take()
            self.take()
            self.expect(")", f"')': {token.text}() takes nothing")
            return Call(token.text)
        if token.kind in ("name", "string"):
            return self.comparison()
        raise ExpressionError(token.at, "expected pipeline.STEP.status, a function (success(), failure(), always()), "
                                        f"not or '(', got {_shown(token)}")

    def comparison(self) -> Expression:
        first = self.operand()
        operator = self.token
        if operator.text not in ("==", "!=") or operator.kind != "operator":
            raise ExpressionError(operator.at, f"expected == or != after {_written(first)}, got {_shown(operator)}")
        self.take()
        second = self.operand(second=True)
        reference, status = (first, second) if isinstance(first, _Reference) else (second, first)
        if not isinstance(reference, _Reference) or not isinstance(status, _Status):
            both = "two statuses" if isinstance(first, _Status) else "two steps' statuses"
            raise ExpressionError(operator.at, f"this compares {both}; compare one step's status with a quoted "
                                               "status: pipeline.fetch.status == 'success'")
        return StepIs(reference.step, status.status, operator.text == "==", reference.at)

    def operand(self, second: bool = False) -> _Reference | _Status:
        token = self.take()
        if token.kind == "string":
            status = token.text[1:-1]
            if status not in STATUSES:
                hint = " (a skipped step is 'cancelled')" if status == "skipped" else ""
                raise ExpressionError(token.at, f"a step's status is one of {', '.join(map(repr, STATUSES))}, "
                                                f"got {token.text}{hint}")
            return _Status(status)
        if token.kind == "name" and token.text == "pipeline":
            self.expect(".", "'.' after pipeline (pipeline.STEP.status)")
            step = self.take()
            if step.kind != "name":
                raise ExpressionError(step.at, f"expected a step's name after pipeline., got {_shown(step)}")
            self.expect(".", f"'.status' after pipeline.{step.text}")
            field_token = self.take()
            if field_token.text != "status" or field_token.kind != "name":
                raise ExpressionError(field_token.at, f"only a step's status can be judged here: "
                                                      f"pipeline.{step.text}.status, got {_shown(field_token)}")
            return _Reference(step.text, token.at)
        if token.kind == "name" and token.text in STATUSES and (second or token.text not in FUNCTIONS):
            raise ExpressionError(token.at, f"a status is quoted: '{token.text}'")
        if token.kind == "name" and token.text in FUNCTIONS:
            raise ExpressionError(token.at + len(token.text), f"expected '(' after {token.text} ({token.text}())")
        raise ExpressionError(token.at, f"expected pipeline.STEP.status or a quoted status, got {_shown(token)}")


@dataclass(frozen=True)
class _Reference:
    step: str
    at: int


@dataclass(frozen=True)
class _Status:
    status: str


def _shown(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text) if token.kind != "string" else token.text


def _written(operand: _Reference | _Status) -> str:
    return f"pipeline.{operand.step}.status" if isinstance(operand, _Reference) else repr(operand.status)


def parse(text: str) -> Expression:
    """The expression in ``text`` (``${{ … }}`` around it or not); ExpressionError saying
    where (an offset in ``text``) and what was expected."""
    inner, offset = unwrap(text)
    return _Parser(text[: offset + len(inner)], offset).whole()


def steps_named(expression: Expression) -> list[StepIs]:
    """Every comparison in the expression, in the order written (the steps it judges)."""
    if isinstance(expression, StepIs):
        return [expression]
    if isinstance(expression, Not):
        return steps_named(expression.operand)
    if isinstance(expression, (And, Or)):
        return steps_named(expression.left) + steps_named(expression.right)
    return []


def render(expression: Expression) -> str:
    """The expression in one canonical text (``and``/``or``/``not``, parenthesised where
    needed) that :func:`parse` reads back as the same expression."""
    if isinstance(expression, StepIs):
        return f"pipeline.{expression.step}.status {'==' if expression.equal else '!='} '{expression.status}'"
    if isinstance(expression, Call):
        return f"{expression.name}()"
    if isinstance(expression, Not):
        operand = render(expression.operand)
        return f"not {operand}" if isinstance(expression.operand, (Call, Not)) else f"not ({operand})"
    if isinstance(expression, And):  # (right-nested: parenthesised, as both read left to right)
        left, right = render(expression.left), render(expression.right)
        left = f"({left})" if isinstance(expression.left, Or) else left
        right = f"({right})" if isinstance(expression.right, (And, Or)) else right
        return f"{left} and {right}"
    right = render(expression.right)
    return f"{render(expression.left)} or " + (f"({right})" if isinstance(expression.right, Or) else right)


def step_status(outcomes: Iterable[str]) -> str:
    """A finished step's status from its works' outcomes (``succeeded``, ``failed``, ``was
    cancelled``): failure if one failed, cancelled if one was cancelled, else success."""
    seen = set(outcomes)
    if "failed" in seen:
        return "failure"
    return "cancelled" if "was cancelled" in seen else "success"


def evaluate(expression: Expression, statuses: Mapping[str, str], all_succeeded: bool) -> bool:
    """Whether the step runs: ``statuses`` are the named steps' (:func:`step_status`),
    ``all_succeeded`` whether every step it follows succeeded (``success()``). KeyError
    for a step not in ``statuses``: a step is never judged on a guess."""
    if isinstance(expression, StepIs):
        return (statuses[expression.step] == expression.status) == expression.equal
    if isinstance(expression, Call):
        return {"success": all_succeeded, "failure": not all_succeeded, "always": True}[expression.name]
    if isinstance(expression, Not):
        return not evaluate(expression.operand, statuses, all_succeeded)
    if isinstance(expression, And):
        return evaluate(expression.left, statuses, all_succeeded) and evaluate(expression.right, statuses,
                                                                               all_succeeded)
    return evaluate(expression.left, statuses, all_succeeded) or evaluate(expression.right, statuses, all_succeeded)
