"""The condition language's syntax: a tokenizer and a Pratt parser that build our own AST.

Nothing here evaluates anything; `rules.compiler` type-checks the tree and turns it into
closures. Errors carry the character offset inside the expression so the loader can point
at `file:line:col` of the very character.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from linelight.rules.fields import DURATION_UNITS, MAX_INT, duration_units_text

MAX_LENGTH = 4000
MAX_DEPTH = 60
MAX_TREE_DEPTH = 100  # operands inside operands; a chain `a or b or ...` counts as one level
# Integers are 64-bit (MAX_INT, from rules.fields), as in the PLCs and historians the values
# come from and go to: a literal beyond it is an error, a computed value beyond it is unknown
# (rules.compiler). Without a bound, `d1 = "d0 * d0"` ... `d32` squares its way to numbers that
# take minutes to multiply.
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})
_NUMBER = re.compile(r"([0-9][0-9_]*(?:\.[0-9][0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?")
_DIGITS = frozenset("0123456789")  # str.isdigit() also says yes to '²' and '٣': not numbers here
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",")
_MISTAKES = {
    "&&": "write 'and' instead of '&&'",
    "||": "write 'or' instead of '||'",
    "<>": "write '!=' instead of '<>'",
    "=": "'=' is not a comparison; write '==' to compare",
    "!": "write 'not' instead of '!'",
    "&": "write 'and' instead of '&'",
    "|": "write 'or' instead of '|'",
    ".": "'.' is not allowed: expressions read inputs by their plain name",
    "[": "'[' is not allowed; write a list of choices as 'x in (1, 2, 3)'",
    "]": "']' is not allowed; write a list of choices as 'x in (1, 2, 3)'",
    "**": "there is no power operator; multiply instead",
}


class ExpressionError(Exception):
    """A problem at character `offset` of an expression (0-based)."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


# -- tokens --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "num", "str", "name", "op", "end"
    text: str
    pos: int
    value: bool | int | float | str | None = None


def tokenize(source: str) -> list[Token]:
    """Split `source` into tokens; unknown characters are errors naming their offset."""
    if len(source) > MAX_LENGTH:
        raise ExpressionError(0, f"the expression is longer than {MAX_LENGTH} characters")
    out: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c in _DIGITS or (c == "." and i + 1 < n and source[i + 1] in _DIGITS):
            tok, i = _number(source, i)
            out.append(tok)
            continue
        m = _NAME.match(source, i)
        if m:
            out.append(Token("name", m.group(0), i))
            i = m.end()
            continue
        if c in "'\"":
            end = source.find(c, i + 1)
            if end < 0:
                raise ExpressionError(i, f"the text starting here has no closing {c}")
            out.append(Token("str", source[i : end + 1], i, source[i + 1 : end]))
            i = end + 1
            continue
        for mistake in ("**", "&&", "||", "<>"):
            if source.startswith(mistake, i):
                raise ExpressionError(i, _MISTAKES[mistake])
        op = next((o for o in _OPERATORS if source.startswith(o, i)), None)
        if op is not None:
            out.append(Token("op", op, i))
            i += len(op)
            continue
        if c in _MISTAKES:
            raise ExpressionError(i, _MISTAKES[c])
        if c.isnumeric():
            raise ExpressionError(i, f"'{c}' is not a digit here; write numbers with 0-9")
        shown = c if c.isprintable() and not c.isspace() else f"U+{ord(c):04X}"
        raise ExpressionError(i, f"unexpected character '{shown}'")
    out.append(Token("end", "", n))
    return out


def _number(source: str, i: int) -> tuple[Token, int]:
    m = _NUMBER.match(source, i)
    assert m is not None  # the caller saw a digit
    text = m.group(0)
    end = m.end()
    if len(text) > 40:
        raise ExpressionError(i, "this number has too many digits")
    if "__" in text or text.endswith("_") or "_." in text or "._" in text:
        raise ExpressionError(i, f"'{text}' is not a number; '_' may only separate digits")
    plain = text.replace("_", "")
    value: int | float
    value = float(plain) if any(ch in plain for ch in ".eE") else int(plain)
    unit_match = _NAME.match(source, end)
    if unit_match:
        unit = unit_match.group(0)
        if unit not in DURATION_UNITS:
            raise ExpressionError(
                end, f"'{text}{unit}' is not a number or a duration; "
                f"durations use {duration_units_text()}, e.g. '500ms'")
        value = float(value) * DURATION_UNITS[unit]
        text += unit
        end = unit_match.end()
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(i, f"'{text}' is too large")
    if isinstance(value, int) and value > MAX_INT:
        raise ExpressionError(i, f"'{text}' is too large; integers go up to {MAX_INT} (2^63 - 1)")
    return Token("num", text, i, value), end


# -- syntax tree ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    pos: int


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: bool | int | float | str


@dataclass(frozen=True, slots=True)
class Name(Node):
    name: str


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # "not" or "-"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str  # and or == != < <= > >= + - * / %
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Member(Node):
    """`x in (a, b)` or `x not in (a, b)`."""

    operand: Node
    choices: tuple[Node, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Call(Node):
    func: str
    args: tuple[Node, ...]
    close: int  # offset of the closing parenthesis


_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">="})
_INFIX = {"or": 10, "and": 20, "in": 40, "not": 40, "+": 50, "-": 50, "*": 60, "/": 60, "%": 60}
_INFIX.update({op: 40 for op in _COMPARE})
_NOT_BP = 30
_NEG_BP = 70


def parse(source: str) -> Node:
    """Parse a whole expression; raises ExpressionError at the offending character."""
    tree = _Parser(source, tokenize(source)).parse_all()
    _check_depth(tree)
    return tree


_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})


def chain(node: Binary) -> list[Binary]:
    """The left-associative chain that `node` tops, top first: the Binary nodes down its left
    side whose operator is of the same family (all `and`, all `or`, or all arithmetic).

    `a + b - c` is one chain of two links. The compiler folds a chain in a loop, so a chain
    is as long as the text allows (`MAX_LENGTH`), not as deep as the nesting limit.
    """
    family = _ARITHMETIC if node.op in _ARITHMETIC else frozenset({node.op})
    links = [node]
    if node.op in _COMPARE:
        return links
    while isinstance(links[-1].left, Binary) and links[-1].left.op in family:
        links.append(links[-1].left)
    return links


def children(node: Node) -> list[Node]:
    """The operands the compiler recurses into: a chain's base and its links' right sides."""
    if isinstance(node, Binary):
        links = chain(node)
        return [links[-1].left] + [b.right for b in reversed(links)]
    if isinstance(node, Unary):
        return [node.operand]
    if isinstance(node, Member):
        return [node.operand, *node.choices]
    if isinstance(node, Call):
        return list(node.args)
    return []


def _check_depth(tree: Node) -> None:
    """The parser bounds parentheses and prefixes; this bounds what else grows a tree's depth
    (`a in (x) in (y) in ...`), so that compiling and evaluating it cannot overflow the stack."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            raise ExpressionError(node.pos, f"the expression nests deeper than {MAX_TREE_DEPTH} "
                                  "levels; split it into [define]s")
        stack.extend((c, depth + 1) for c in children(node))


class _Parser:
    def __init__(self, source: str, tokens: list[Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def parse_all(self) -> Node:
        if self.peek().kind == "end":
            raise ExpressionError(0, "the expression is empty")
        node = self.expr(0)
        tok = self.peek()
        if tok.kind != "end":
            if tok.text == ")":
                raise ExpressionError(tok.pos, "this ')' has no matching '('")
            raise ExpressionError(
                tok.pos, f"unexpected {_describe(tok)} after a complete expression; "
                "did you forget 'and' or 'or'?")
        return node

    def expr(self, min_bp: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(self.peek().pos, f"the expression nests deeper than {MAX_DEPTH} levels")
        left = self.prefix()
        while True:
            tok = self.peek()
            key = tok.text if tok.kind in ("op", "name") else ""
            bp = _INFIX.get(key)
            if bp is None or bp <= min_bp:
                break
            left = self.infix(left, self.next(), bp)
        self.depth -= 1
        return left

    def prefix(self) -> Node:
        tok = self.next()
        if tok.kind == "num" or tok.kind == "str":
            assert tok.value is not None
            return Literal(tok.pos, tok.value)
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                return Literal(tok.pos, tok.text == "true")
            if tok.text == "not":
                return Unary(tok.pos, "not", self.expr(_NOT_BP))
            if tok.text in KEYWORDS:
                raise ExpressionError(tok.pos, f"'{tok.text}' cannot start an expression")
            if self.peek().text == "(" and self.peek().kind == "op":
                return self.call(tok)
            return Name(tok.pos, tok.text)
        if tok.text == "-":
            return Unary(tok.pos, "-", self.expr(_NEG_BP))
        if tok.text == "+":
            return self.expr(_NEG_BP)
        if tok.text == "(":
            inner = self.expr(0)
            self.expect_close(tok)
            return inner
        if tok.kind == "end":
            raise ExpressionError(tok.pos, "the expression ends too early; something is missing here")
        raise ExpressionError(tok.pos, f"unexpected {_describe(tok)}")

    def infix(self, left: Node, tok: Token, bp: int) -> Node:
        op = tok.text
        if op == "not":
            nxt = self.next()
            if nxt.text != "in" or nxt.kind != "name":
                raise ExpressionError(tok.pos, "unexpected 'not'; did you mean 'not in'?")
            return self.member(left, tok, negated=True)
        if op == "in":
            return self.member(left, tok, negated=False)
        right = self.expr(bp)
        if op in _COMPARE:
            after = self.peek()
            if after.text in _COMPARE and after.kind == "op":
                raise ExpressionError(
                    after.pos, "comparisons cannot be chained; write 'between(x, low, high)' "
                    "or join them with 'and'")
        return Binary(tok.pos, op, left, right)

    def member(self, left: Node, tok: Token, negated: bool) -> Node:
        opening = self.next()
        if opening.text != "(" or opening.kind != "op":
            raise ExpressionError(opening.pos, "'in' needs a list of choices in parentheses, "
                                  "e.g. 'x in (1, 2, 3)'")
        choices = self.arguments(opening)
        if not choices:
            raise ExpressionError(opening.pos, "the list of choices after 'in' is empty")
        return Member(tok.pos, left, tuple(choices), negated)

    def call(self, name: Token) -> Node:
        opening = self.next()
        args = self.arguments(opening)
        return Call(name.pos, name.text, tuple(args), self.tokens[self.i - 1].pos)

    def arguments(self, opening: Token) -> list[Node]:
        args: list[Node] = []
        if self.peek().text == ")" and self.peek().kind == "op":
            self.next()
            return args
        while True:
            args.append(self.expr(0))
            tok = self.peek()
            if tok.text == "," and tok.kind == "op":
                self.next()
                continue
            self.expect_close(opening)
            return args

    def expect_close(self, opening: Token) -> None:
        tok = self.peek()
        if tok.text == ")" and tok.kind == "op":
            self.next()
            return
        if tok.kind == "end":
            raise ExpressionError(opening.pos, "this '(' is never closed")
        raise ExpressionError(tok.pos, f"expected ')' or ',' but found {_describe(tok)}")


def _describe(tok: Token) -> str:
    if tok.kind == "end":
        return "the end of the expression"
    if tok.kind == "name":
        return f"'{tok.text}'" if tok.text in KEYWORDS else f"name '{tok.text}'"
    if tok.kind == "num":
        return f"number '{tok.text}'"
    if tok.kind == "str":
        return f"text {tok.text}"
    return f"'{tok.text}'"


def unparse(node: Node) -> str:
    """Canonical, fully parenthesized text of a tree: equal text means equal meaning."""
    if isinstance(node, Literal):
        if isinstance(node.value, bool):
            return "true" if node.value else "false"
        if isinstance(node.value, str):
            return repr(node.value)
        return repr(node.value)
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Unary):
        return f"({node.op} {unparse(node.operand)})"
    if isinstance(node, Binary):
        # a left-associative chain (`a + a + ... + a`) is as long as the text, not as deep as
        # the nesting limit: walk its left spine in a loop, recurse only into right operands
        links = chain(node)
        parts = ["(" * len(links), unparse(links[-1].left)]
        parts += [f" {b.op} {unparse(b.right)})" for b in reversed(links)]
        return "".join(parts)
    if isinstance(node, Member):
        inner = ", ".join(unparse(c) for c in node.choices)
        return f"({unparse(node.operand)} {'not in' if node.negated else 'in'} ({inner}))"
    if isinstance(node, Call):
        return f"{node.func}({', '.join(unparse(a) for a in node.args)})"
    raise TypeError(f"not an expression node: {node!r}")
