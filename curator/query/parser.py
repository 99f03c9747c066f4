"""The query language's syntax: text → a small tree of terms, with columns for errors.

Grammar (OR binds tighter than the implicit AND, `-` tighter than both)::

    query   := and?
    and     := or+                      terms side by side: all must hold
    or      := unary ('|' unary)*       `cat|dog`, `(a b) | c`
    unary   := '-' unary | atom         `-cat`, `-(a|b)`
    atom    := '(' and ')' | term

A term is one word: `cat`, `blue_*`, `key:value`, `key>=value`, `key~value`
(operators `:` `~` `>=` `<=` `>` `<` `=` `!=`; the first one after the word's
first character splits it). Double quotes make text literal and may hold spaces:
`caption~"red dress"`, `"long hair"`, `"re:zero"`; `\\"` is a quote inside quotes.
Parentheses balanced inside a word belong to it (`hatsune_miku_(cosplay)`,
`score(nsfw)<0.2`); a `)` the word did not open closes a group.

`key:a|b|c` (or `key=a|b`) with no spaces around `|` repeats the key for each
bare word: `rating:general|sensitive`, `format:png|webp`, `source:user|model:wd14`.
To OR a field with a tag, put spaces around `|`: `rating:general | cat`.

Kaomoji tags that hold an operator after a letter, or start with `-`, need quotes:
`"<o>_<o>"`, `"-_-"` (`>_<` and `=_=` work as they are).

A tag may end in `@SOURCE` to count only that source's rows: `cat@user`,
`cat@model:wd14`, `cat@model:wd14>=0.5`.

A run of dashes negates as often as it is long (`--cat` is `cat`). Parentheses nest
at most `MAX_DEPTH` deep and a query holds at most `MAX_TERMS` words; text that is
not valid UTF-8 (bytes, or the surrogates a terminal leaves for undecodable bytes)
is refused with the column of the first bad character.

What the words mean (fields, tags, numbers) is decided by `curator.query.compile`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from curator.errors import QueryError

OPERATORS = (">=", "<=", "!=", ">", "<", "=", "~", ":")
# Limits that keep a hostile query a one-line error rather than a stack or SQLite overflow.
MAX_DEPTH = 64  # nested parentheses
MAX_TERMS = 256  # words in one query: each costs a few ms to compile
COMPARISONS = (">=", "<=", "!=", ">", "<", "=")
# Keys whose values may hold a colon, so `source:user|model:wd14` carries the key over.
VALUES_WITH_COLONS = ("source",)
# `@user`, `@sidecar`, `@model`, `@model:NAME` at the end of a tag (or before its threshold).
_SOURCE_SUFFIX = re.compile(r"@(user|sidecar|model(?::[^\s<>=!@]+)?)(?=$|[<>=!])")


@dataclass(frozen=True, slots=True)
class Value:
    """Text from the query, remembering which parts were quoted."""

    parts: tuple[tuple[str, bool], ...]  # (text, quoted)
    column: int  # 1-based column where the value starts

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.parts)

    @property
    def quoted(self) -> bool:
        return any(quoted for _, quoted in self.parts)

    @property
    def has_wildcard(self) -> bool:
        """An unquoted `*` matches any run of characters."""
        return any("*" in text for text, quoted in self.parts if not quoted)

    def like_pattern(self, escape: str = "\\") -> str:
        """A LIKE pattern: unquoted `*` → `%`, everything else literal."""
        out = []
        for text, quoted in self.parts:
            text = text.replace(escape, escape * 2).replace("%", escape + "%")
            text = text.replace("_", escape + "_")
            out.append(text if quoted else text.replace("*", "%"))
        return "".join(out)

    def map(self, fn: Callable[[str], str]) -> Value:
        """The same value with `fn` applied to each part's text."""
        return Value(tuple((fn(t), q) for t, q in self.parts), self.column)


@dataclass(frozen=True, slots=True)
class Term:
    """One word of the query, split at its operator.

    A bare tag has `key=None`, `op=None` and one value. `values` holds more than
    one value only for `key:a|b`. `source` is a tag's `@SOURCE` suffix.
    """

    key: Value | None
    op: str | None
    values: tuple[Value, ...]
    column: int
    text: str
    source: str | None = None

    @property
    def value(self) -> Value:
        return self.values[0]


@dataclass(frozen=True, slots=True)
class Not:
    node: Node
    column: int


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


Node = Term | Not | And | Or


@dataclass(slots=True)
class Token:
    kind: Literal["word", "(", ")", "|", "-", "end"]
    column: int
    glued: bool  # no whitespace before it
    parts: list[tuple[str, bool]] = field(default_factory=list)
    text: str = ""


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n, glued = 0, len(text), False
    while i < n:
        c = text[i]
        if c.isspace():
            i, glued = i + 1, False
            continue
        if c in "()|":
            tokens.append(Token(c, i + 1, glued))  # type: ignore[arg-type]
            i, glued = i + 1, True
            continue
        if c == "-":
            following = text[i + 1 : i + 2]
            if not following or following.isspace() or following in ")|":
                raise QueryError("expected a term after '-'", column=i + 1)
            tokens.append(Token("-", i + 1, glued))
            i, glued = i + 1, True
            continue
        token, i = _read_word(text, i)
        token.glued = glued
        tokens.append(token)
        glued = True
    tokens.append(Token("end", n + 1, glued))
    return tokens


def _read_word(text: str, start: int) -> tuple[Token, int]:
    """A word runs to whitespace, `|`, or a `)` it did not open; quotes may hold anything."""
    parts: list[tuple[str, bool]] = []
    buf: list[str] = []
    depth, i, n = 0, start, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            if buf:
                parts.append(("".join(buf), False))
                buf = []
            quoted, i = _read_quoted(text, i)
            parts.append((quoted, True))
            continue
        if c.isspace() or c == "|" or (c == ")" and depth == 0):
            break
        depth += {"(": 1, ")": -1}.get(c, 0)
        buf.append(c)
        i += 1
    if buf:
        parts.append(("".join(buf), False))
    return Token("word", start + 1, False, parts, text[start:i]), i


def quote(value: str) -> str:
    """``value`` as one quoted, literal piece of query text: `folder:` + quote(path).

    Code that builds a query from user values (folder names, tags) goes through this,
    so quotes, backslashes, spaces and operators in them stay literal.
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise QueryError("unterminated quote", column=start + 1)


def parse(text: str) -> Node | None:
    """The query's tree, or None for an empty query."""
    text = _as_text(text)
    tokens = tokenize(text)
    words = sum(t.kind == "word" for t in tokens)
    if words > MAX_TERMS:
        raise QueryError(f"a query holds at most {MAX_TERMS} terms, this one {words}")
    return _Parser(tokens).parse()


def _as_text(text: str | bytes) -> str:
    """Text that can be bound as UTF-8: undecodable bytes are an error, not a crash later."""
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise QueryError("the query is not UTF-8 text", column=e.start + 1) from None
    if not isinstance(text, str):
        raise QueryError(f"a query is text, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # surrogates: bytes a terminal could not decode
        raise QueryError(
            "the query holds bytes that are not UTF-8 text", column=e.start + 1
        ) from None
    return text


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.pos += 1
        return token

    def parse(self) -> Node | None:
        if self.peek().kind == "end":
            return None
        node = self.and_()
        token = self.peek()
        if token.kind == ")":
            raise QueryError("unbalanced parenthesis: ')' without '('", column=token.column)
        return node

    def and_(self) -> Node:
        nodes = []
        while self.peek().kind not in (")", "end"):
            nodes.append(self.or_())
        if not nodes:
            raise QueryError("expected a term", column=self.peek().column)
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def or_(self) -> Node:
        if self.peek().kind == "|":
            raise QueryError("expected a term before '|'", column=self.peek().column)
        nodes = [self.unary()]
        while self.peek().kind == "|":
            bar = self.take()
            if self.peek().kind in ("|", ")", "end"):
                raise QueryError("expected a term after '|'", column=bar.column)
            nodes.append(self.unary())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def unary(self) -> Node:
        """`-x`; a run of dashes is read in a loop (`--x` is `x`), not by recursion."""
        first, negations = self.peek(), 0
        while self.peek().kind == "-":
            self.take()
            negations += 1
        node = self.atom()
        return Not(node, first.column) if negations % 2 else node

    def atom(self) -> Node:
        token = self.take()
        if token.kind == "(":
            if self.peek().kind == ")":
                raise QueryError("empty parentheses", column=token.column)
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"parentheses nest at most {MAX_DEPTH} deep", column=token.column)
            node = self.and_()
            if self.peek().kind != ")":
                raise QueryError("unbalanced parenthesis: '(' is never closed", token.column)
            self.take()
            self.depth -= 1
            return node
        if token.kind == ")":
            raise QueryError("unbalanced parenthesis: ')' without '('", column=token.column)
        if token.kind == "|":
            raise QueryError("expected a term before '|'", column=token.column)
        if token.kind == "end":
            raise QueryError("expected a term", column=token.column)
        term = split_term(token)
        if term.op in (":", "="):
            term = self._more_values(term)
        return term

    def _more_values(self, term: Term) -> Term:
        """`key:a|b|c`: bare words glued to the `|` are more values for the same key."""
        assert term.key is not None
        whole_words = term.key.text.lower() in VALUES_WITH_COLONS
        values = list(term.values)
        while (
            self.peek().kind == "|"
            and self.peek().glued
            and self.peek(1).kind == "word"
            and self.peek(1).glued
        ):
            token = self.peek(1)
            if whole_words:
                value = _value(token.parts, token.column)
            else:
                word = split_term(token)
                if word.key is not None or word.source is not None:
                    break
                value = word.value
            self.pos += 2
            values.append(value)
        if len(values) == len(term.values):
            return term
        return Term(term.key, term.op, tuple(values), term.column, term.text, term.source)


def split_term(token: Token) -> Term:
    """Split a word at its first operator outside quotes (not at its first character)."""
    parts, source = _strip_source(token)
    position = 0
    for index, (text, quoted) in enumerate(parts):
        if not quoted:
            for offset in range(len(text)):
                if position + offset == 0:
                    continue
                op = next((o for o in OPERATORS if text.startswith(o, offset)), None)
                if op is None:
                    continue
                key = [*parts[:index], (text[:offset], False)]
                if not any(ch.isalnum() for t, _ in key for ch in t):
                    continue  # a kaomoji such as `>_<` or `=_=`, not `key op value`
                rest = [(text[offset + len(op) :], False), *parts[index + 1 :]]
                value_column = token.column + position + offset + len(op)
                return Term(
                    _value(key, token.column),
                    op,
                    (_value(rest, value_column),),
                    token.column,
                    token.text,
                    source,
                )
        position += len(text) + (2 if quoted else 0)
    return Term(None, None, (_value(parts, token.column),), token.column, token.text, source)


def split_comparison(value: Value) -> tuple[Value, str, Value] | None:
    """`miku>=0.8` → (`miku`, `>=`, `0.8`): a threshold after a category-qualified tag."""
    term = split_term(
        Token("word", value.column, True, list(value.parts), "".join(t for t, _ in value.parts))
    )
    if term.key is None or term.op not in COMPARISONS:
        return None
    return term.key, term.op, term.value


def _strip_source(token: Token) -> tuple[list[tuple[str, bool]], str | None]:
    """Remove a trailing `@SOURCE` qualifier (outside quotes) from a word's parts."""
    parts = list(token.parts)
    for index in range(len(parts) - 1, -1, -1):
        text, quoted = parts[index]
        if quoted:
            continue
        for match in _SOURCE_SUFFIX.finditer(text):
            if match.start() == 0 and index == 0:
                continue
            tail = text[match.end() :]
            if index != len(parts) - 1 and not tail:
                continue  # a quoted part follows: not at the end of the tag
            parts[index] = (text[: match.start()] + tail, False)
            return [p for p in parts if p[0] or p[1]], match[1]
    return parts, None


def _value(parts: list[tuple[str, bool]], column: int) -> Value:
    return Value(tuple(p for p in parts if p[0] or p[1]), column)
