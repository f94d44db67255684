"""Pre-committed decision rules (``files/decision-rules/*.yaml``) and a tiny safe evaluator.

The condition language has numbers, 'strings', true/false/null, named inputs, + - * /, comparisons
(< <= > >= == !=), and/or/not, abs(...) and parentheses — nothing else; no eval(). Logic is three-valued
(Kleene): a missing input (null) makes a comparison *unknown*; ``false and unknown`` is false,
``true or unknown`` is true. Outcomes are tried in order: the first true one wins, a false one is skipped,
an unknown one stops evaluation (the verdict then says which inputs are missing).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError

UNKNOWN = None  # three-valued logic: None is "unknown"

TOP_KEYS = {
    "rule_version": True,
    "name": True,
    "description": False,
    "inputs": True,
    "outcomes": True,
    "default": True,
    "gate": False,
}
INPUT_KEYS = {"source", "system", "field", "stat", "default", "description"}
OUTCOME_KEYS = {"outcome", "when", "reason"}
DEFAULT_KEYS = {"outcome", "reason"}
GATE_KEYS = {"gemma_max_drift", "outcome"}
SOURCES = {"results", "ratings", "gemma"}
STATS = {"mean", "n"}


class RuleError(UserError):
    pass


# ---------------------------------------------------------------- YAML with line numbers
class _LineDict(dict):
    lines: dict[str, int]
    line: int


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        d = _LineDict()
        d.lines = {}
        d.line = node.start_mark.line + 1
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            d[key] = loader.construct_object(vnode, deep=True)
            d.lines[key] = knode.start_mark.line + 1
        return d

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


# ---------------------------------------------------------------- expressions
_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|'([^']*)'|([A-Za-z_][A-Za-z0-9_]*)|(<=|>=|==|!=|[<>+\-*/()]))"
)
_KEYWORDS = {"and", "or", "not", "true", "false", "null", "abs"}


@dataclass(frozen=True)
class Expr:
    source: str
    tree: Any
    names: frozenset[str]


def _tokens(src: str) -> list[tuple[str, Any, int]]:
    out, pos = [], 0
    while pos < len(src):
        if src[pos:].strip() == "":
            break
        m = _TOKEN.match(src, pos)
        if not m:
            raise ValueError(f"unexpected character {src[pos:].lstrip()[:1]!r} at column {pos + 1}")
        num, s, name, op = m.groups()
        col = m.start() + (len(m.group(0)) - len(m.group(0).lstrip())) + 1
        if num is not None:
            out.append(("num", float(num), col))
        elif s is not None:
            out.append(("str", s, col))
        elif name is not None:
            out.append(("kw", name, col) if name in _KEYWORDS else ("name", name, col))
        else:
            out.append(("op", op, col))
        pos = m.end()
    out.append(("end", None, len(src) + 1))
    return out


def parse_expr(src: str) -> Expr:
    toks = _tokens(src)
    i = 0
    names: set[str] = set()

    def peek():
        return toks[i]

    def take(kind=None, val=None):
        nonlocal i
        t = toks[i]
        if (kind and t[0] != kind) or (val is not None and t[1] != val):
            want = val or kind
            got = t[1] if t[0] != "end" else "end of condition"
            raise ValueError(f"expected {want!r} at column {t[2]}, got {got!r}")
        i += 1
        return t

    def p_or():
        left = p_and()
        while peek()[:2] == ("kw", "or"):
            take()
            left = ("or", left, p_and())
        return left

    def p_and():
        left = p_not()
        while peek()[:2] == ("kw", "and"):
            take()
            left = ("and", left, p_not())
        return left

    def p_not():
        if peek()[:2] == ("kw", "not"):
            take()
            return ("not", p_not())
        return p_cmp()

    def p_cmp():
        left = p_sum()
        if peek()[0] == "op" and peek()[1] in {"<", "<=", ">", ">=", "==", "!="}:
            op = take()[1]
            return ("cmp", op, left, p_sum())
        return left

    def p_sum():
        left = p_term()
        while peek()[0] == "op" and peek()[1] in {"+", "-"}:
            op = take()[1]
            left = ("arith", op, left, p_term())
        return left

    def p_term():
        left = p_unary()
        while peek()[0] == "op" and peek()[1] in {"*", "/"}:
            op = take()[1]
            left = ("arith", op, left, p_unary())
        return left

    def p_unary():
        if peek()[:2] == ("op", "-"):
            take()
            return ("neg", p_unary())
        return p_atom()

    def p_atom():
        t = peek()
        if t[0] in {"num", "str"}:
            take()
            return ("lit", t[1])
        if t[0] == "kw" and t[1] in {"true", "false", "null"}:
            take()
            return ("lit", {"true": True, "false": False, "null": None}[t[1]])
        if t[0] == "kw" and t[1] == "abs":
            take()
            take("op", "(")
            e = p_or()
            take("op", ")")
            return ("abs", e)
        if t[0] == "name":
            take()
            names.add(t[1])
            return ("name", t[1])
        if t[:2] == ("op", "("):
            take()
            e = p_or()
            take("op", ")")
            return e
        got = t[1] if t[0] != "end" else "end of condition"
        raise ValueError(f"unexpected {got!r} at column {t[2]}")

    tree = p_or()
    if peek()[0] != "end":
        raise ValueError(f"unexpected {peek()[1]!r} at column {peek()[2]}")
    return Expr(src, tree, frozenset(names))


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RuleError(f"rule condition: {what} needs a number, got {v!r}")
    return float(v)


def evaluate(tree: Any, env: dict[str, Any]) -> Any:
    """Evaluate a parsed condition; returns True/False, a value, or None (unknown)."""
    kind = tree[0]
    if kind == "lit":
        return tree[1]
    if kind == "name":
        return env.get(tree[1])
    if kind == "not":
        v = evaluate(tree[1], env)
        return None if v is None else not bool(v)
    if kind in {"and", "or"}:
        a, b = evaluate(tree[1], env), evaluate(tree[2], env)
        a = None if a is None else bool(a)
        b = None if b is None else bool(b)
        if kind == "and":
            return False if (a is False or b is False) else (None if (a is None or b is None) else True)
        return True if (a is True or b is True) else (None if (a is None or b is None) else False)
    if kind == "neg":
        v = evaluate(tree[1], env)
        return None if v is None else -_num(v, "'-'")
    if kind == "abs":
        v = evaluate(tree[1], env)
        return None if v is None else abs(_num(v, "abs()"))
    if kind == "arith":
        a, b = evaluate(tree[2], env), evaluate(tree[3], env)
        if a is None or b is None:
            return None
        a, b = _num(a, tree[1]), _num(b, tree[1])
        if tree[1] == "/" and b == 0:
            return None
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[tree[1]]
    if kind == "cmp":
        op, a, b = tree[1], evaluate(tree[2], env), evaluate(tree[3], env)
        if a is None or b is None:
            return None
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        a, b = _num(a, op), _num(b, op)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    raise RuleError(f"rule condition: unknown node {kind}")  # pragma: no cover


# ---------------------------------------------------------------- rule files
@dataclass(frozen=True)
class InputSpec:
    name: str
    source: str
    system: str | None
    field: str | None
    stat: str | None
    default: Any
    has_default: bool


@dataclass(frozen=True)
class Outcome:
    outcome: str
    when: Expr | None
    reason: str


@dataclass
class RuleSet:
    path: Path
    sha256: str
    rule_version: Any
    name: str
    description: str
    inputs: dict[str, InputSpec]
    outcomes: list[Outcome]
    default: Outcome
    gemma_max_drift: float | None = None
    gate_outcome: str = "failed_gate_gemma_drift"
    raw: dict[str, Any] = field(default_factory=dict)


def _unknown_keys(where: str, d: _LineDict, allowed: set[str] | dict[str, bool], path: Path) -> None:
    for k in d:
        if k not in allowed:
            line = getattr(d, "lines", {}).get(k, "?")
            raise RuleError(
                f"{path}:{line}: unknown field {k!r} in {where} (allowed: {', '.join(sorted(allowed))})"
            )


def _need_map(v: Any, where: str, path: Path, line: Any) -> _LineDict:
    if not isinstance(v, dict):
        raise RuleError(f"{path}:{line}: {where} must be a mapping")
    return v


def load_rules(path: str | Path) -> RuleSet:
    """Parse and check a rule file; every error names the file and line."""
    from ttsbench.yamlload import YamlError, parse_yaml  # duplicate keys, tabs, control characters refused

    p = Path(path)
    if not p.is_file():
        raise RuleError(f"{p}: no such rule file")
    data = p.read_bytes()
    try:
        doc = parse_yaml(data.decode("utf-8"), str(p))
    except UnicodeDecodeError as exc:
        raise RuleError(f"{p}: not UTF-8 (byte {exc.start}); save the rule file as UTF-8") from None
    except YamlError as exc:
        m = re.match(r"^(.*):(\d+):(\d+): not valid YAML: (.*)$", str(exc))
        raise RuleError(f"{m[1]}:{m[2]}: YAML syntax error at column {m[3]}: {m[4]}" if m else str(exc)) from None
    top = _need_map(doc, "the rule file", p, 1)
    _unknown_keys("the rule file", top, TOP_KEYS, p)
    for k, required in TOP_KEYS.items():
        if required and k not in top:
            raise RuleError(f"{p}:1: missing required field {k!r}")
    inputs: dict[str, InputSpec] = {}
    ins = _need_map(top["inputs"], "inputs", p, top.lines["inputs"])
    for name, spec in ins.items():
        line = ins.lines[name]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)) or name in _KEYWORDS:
            raise RuleError(f"{p}:{line}: bad input name {name!r}")
        spec = _need_map(spec, f"input {name!r}", p, line)
        _unknown_keys(f"input {name!r}", spec, INPUT_KEYS, p)
        src = spec.get("source")
        if src not in SOURCES:
            raise RuleError(f"{p}:{line}: input {name!r}: source must be one of {', '.join(sorted(SOURCES))}")
        if src in {"results", "ratings"} and not spec.get("system"):
            raise RuleError(
                f"{p}:{line}: input {name!r}: needs 'system' (a system_id or pattern like 'voxtral@*')"
            )
        if src in {"results", "gemma"} and not spec.get("field"):
            raise RuleError(f"{p}:{line}: input {name!r}: needs 'field'")
        if src == "ratings" and spec.get("stat", "mean") not in STATS:
            raise RuleError(f"{p}:{line}: input {name!r}: stat must be one of {', '.join(sorted(STATS))}")
        inputs[name] = InputSpec(
            name,
            src,
            spec.get("system"),
            spec.get("field"),
            spec.get("stat", "mean") if src == "ratings" else None,
            spec.get("default"),
            "default" in spec,
        )

    def outcome(o: Any, where: str, line: Any, need_when: bool) -> Outcome:
        o = _need_map(o, where, p, line)
        _unknown_keys(where, o, OUTCOME_KEYS if need_when else DEFAULT_KEYS, p)
        if not o.get("outcome"):
            raise RuleError(f"{p}:{o.line}: {where} needs 'outcome'")
        expr = None
        if need_when:
            if "when" not in o:
                raise RuleError(f"{p}:{o.line}: {where} needs 'when'")
            try:
                expr = parse_expr(str(o["when"]))
            except ValueError as exc:
                raise RuleError(f"{p}:{o.lines['when']}: bad condition {o['when']!r}: {exc}") from None
            unknown = sorted(expr.names - set(inputs))
            if unknown:
                raise RuleError(
                    f"{p}:{o.lines['when']}: condition uses undeclared input(s) {', '.join(unknown)}"
                )
        return Outcome(str(o["outcome"]), expr, str(o.get("reason", "")))

    outs = top["outcomes"]
    if not isinstance(outs, list) or not outs:
        raise RuleError(f"{p}:{top.lines['outcomes']}: outcomes must be a non-empty list")
    outcomes = [outcome(o, f"outcomes[{j}]", top.lines["outcomes"] + j, True) for j, o in enumerate(outs)]
    default = outcome(top["default"], "default", top.lines["default"], False)
    rs = RuleSet(
        p,
        hashlib.sha256(data).hexdigest(),
        top["rule_version"],
        str(top["name"]),
        str(top.get("description", "")).strip(),
        inputs,
        outcomes,
        default,
        raw=dict(top),
    )
    if "gate" in top:
        g = _need_map(top["gate"], "gate", p, top.lines["gate"])
        _unknown_keys("gate", g, GATE_KEYS, p)
        if "gemma_max_drift" in g:
            rs.gemma_max_drift = float(g["gemma_max_drift"])
        rs.gate_outcome = str(g.get("outcome", rs.gate_outcome))
    return rs
