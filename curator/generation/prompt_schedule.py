"""A1111's prompt editing `[a:b:when]` and alternation `[a|b]`, as per-step schedules.

`prompt_schedule(prompt, steps)` gives the list of (last step, prompt text) pairs that
A1111's `get_learned_conditioning_prompt_schedules` gives. The grammar is A1111's:

- `[before:after:N]` switches at step N (N < 1 is a fraction of the steps, truncated to
  an integer and capped at `steps`); `[after:N]` adds, `[before::N]` removes text;
- `[a|b|c]` cycles per step; as in A1111 an alternative yields only its first element
  (`[a (b)|c]` gives "a " then "c");
- any other bracket, and `(x)` / `(x:1.2)`, is kept verbatim for the attention parser;
- brackets that do not close are literal text; a `|` outside an alternation or a lone
  trailing backslash makes the whole prompt literal (A1111's parser rejects it).

A hand-written recursive descent parser stands in for A1111's Earley grammar: the grammar
is ambiguous only where stray bracket characters sit next to a construct, and there A1111
may read the construct as literal text where this parser reads the construct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curator.generation.prompt_attention import PromptSyntaxError

# lark's SIGNED_NUMBER, which A1111's grammar uses for the switch step.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_WHITESPACE = re.compile(r"\s+")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_STRUCTURE = "[]():"


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Group:  # a sequence of nodes (A1111's `prompt`)
    items: tuple


@dataclass(frozen=True)
class Scheduled:
    before: Group | None
    after: Group
    number: str


@dataclass(frozen=True)
class Alternate:
    options: tuple[Group, ...]


class _Reject(Exception):
    """The prompt is outside the grammar: A1111 uses it verbatim."""


class _Parser:
    def __init__(self, text: str):
        self.text = text

    def prompt(self, pos: int) -> tuple[Group, int]:
        """Longest run of plain text and bracket constructs from `pos`."""
        items: list = []
        text = self.text
        while pos < len(text):
            plain = _PLAIN.match(text, pos)
            if plain is not None:
                items.append(Text(plain.group(0)))
                pos = plain.end()
                continue
            construct = self.construct(pos)
            if construct is None:
                break
            node, pos = construct
            items.append(node)
        return Group(tuple(items)), pos

    def construct(self, pos: int):
        text = self.text
        if text.startswith("(", pos):
            inner, after = self.prompt(pos + 1)
            if text.startswith(")", after):
                return Group((Text("("), inner, Text(")"))), after + 1
            if text.startswith(":", after):
                weight, end = self.prompt(after + 1)
                if text.startswith(")", end):
                    return Group((Text("("), inner, Text(":"), weight, Text(")"))), end + 1
            return None
        if text.startswith("[", pos):
            return self.scheduled(pos) or self.alternate(pos) or self.square(pos)
        return None

    def number_close(self, pos: int) -> tuple[str, int] | None:
        """`[whitespace] NUMBER ]` at pos."""
        space = _WHITESPACE.match(self.text, pos)
        pos = space.end() if space else pos
        number = _NUMBER.match(self.text, pos)
        if number is None or not self.text.startswith("]", number.end()):
            return None
        return number.group(0), number.end() + 1

    def scheduled(self, pos: int):
        first, after_first = self.prompt(pos + 1)
        if not self.text.startswith(":", after_first):
            return None
        close = self.number_close(after_first + 1)
        if close is not None:
            return Scheduled(None, first, close[0]), close[1]
        second, after_second = self.prompt(after_first + 1)
        if not self.text.startswith(":", after_second):
            return None
        close = self.number_close(after_second + 1)
        if close is None:
            return None
        return Scheduled(first, second, close[0]), close[1]

    def alternate(self, pos: int):
        options = []
        while True:
            option, pos = self.prompt(pos + 1)
            options.append(option)
            if not self.text.startswith("|", pos):
                break
        if len(options) < 2 or not self.text.startswith("]", pos):
            return None
        return Alternate(tuple(options)), pos + 1

    def square(self, pos: int):
        inner, after = self.prompt(pos + 1)
        if self.text.startswith("]", after):
            return Group((Text("["), inner, Text("]"))), after + 1
        return None

    def top(self) -> Group:
        """A1111's start rule: prompts, with unmatched `[]():` kept as literal text."""
        items: list = []
        pos, text = 0, self.text
        while pos < len(text):
            group, after = self.prompt(pos)
            if after > pos:
                items.append(group)
                pos = after
            elif text[pos] in _STRUCTURE:
                items.append(Text(text[pos]))
                pos += 1
            else:  # "|" outside an alternation, or a backslash escaping nothing
                raise _Reject
        return Group(tuple(items))


def _switch_step(number: str, steps: int) -> int:
    value = float(number)
    if value < 1:
        value *= steps
    try:
        return min(steps, int(value))
    except OverflowError:
        raise PromptSyntaxError(f"prompt editing step {number!r} is out of range") from None


def _collect(node, steps: int, found: set[int]) -> None:
    if isinstance(node, Scheduled):
        found.add(_switch_step(node.number, steps))
        if node.before is not None:
            _collect(node.before, steps, found)
        _collect(node.after, steps, found)
    elif isinstance(node, Alternate):
        found.update(range(1, steps + 1))
        for option in node.options:
            _collect(option, steps, found)
    elif isinstance(node, Group):
        for item in node.items:
            _collect(item, steps, found)


def _render(node, step: int, steps: int, out: list[str]) -> None:
    if isinstance(node, Text):
        out.append(node.text)
    elif isinstance(node, Group):
        for item in node.items:
            _render(item, step, steps, out)
    elif isinstance(node, Scheduled):
        if step <= _switch_step(node.number, steps):
            if node.before is not None:
                _render(node.before, step, steps, out)
        else:
            _render(node.after, step, steps, out)
    elif isinstance(node, Alternate):
        option = node.options[(step - 1) % len(node.options)]
        if not option.items:
            raise PromptSyntaxError("an alternation [a|b] has an empty alternative")
        _render(option.items[0], step, steps, out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """[(last step, prompt text)] for `steps` sampling steps, as A1111 schedules it."""
    try:
        tree = _Parser(prompt).top()
    except _Reject:
        return [(steps, prompt)]
    found = {steps}
    _collect(tree, steps, found)
    result = []
    for step in sorted(found):
        out: list[str] = []
        _render(tree, step, steps, out)
        result.append((step, "".join(out)))
    return result
