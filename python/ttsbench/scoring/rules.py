"""Pre-committed decision rules (``files/decision-rules/*.yaml``), checked when they load, and a safe evaluator.

A condition is a Python-syntax *expression* parsed with ``ast.parse(mode="eval")`` and accepted only when
every node is on a small whitelist: numbers, 'strings', true/false/null, declared input names,
``+ - * /``, comparisons (``< <= > >= == !=``), ``and``/``or``/``not``, ``abs(...)`` and parentheses.
Nothing is ever passed to ``eval()``. Conditions are type-checked at load time (a ``when`` must be
boolean; inputs take their type from the results schema, the ratings shape or their default).

Logic is three-valued (Kleene): a missing input (null) makes a comparison *unknown*; ``false and unknown``
is false, ``true or unknown`` is true. How outcomes are chosen is in :mod:`ttsbench.scoring.verdict`.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError
from ttsbench.results import schema as results_schema
from ttsbench.yamlload import YamlMap

UNKNOWN = None  # three-valued logic: None is "unknown"

TOP_KEYS = {
    "rule_version": True,
    "name": True,
    "description": False,
    "inputs": True,
    "requires": False,
    "outcomes": True,
    "default": True,
    "gate": False,
}
INPUT_KEYS = {"source", "system", "field", "stat", "default", "description"}
OUTCOME_KEYS = {"outcome", "when", "reason"}
DEFAULT_KEYS = {"outcome", "reason"}
GATE_KEYS = {"outcome"}
SOURCES = {"results", "ratings", "gemma"}
# the shape of scores/ratings.json stats.per_system.<system> (ttsbench.scoring.stats.mean_ci + aggregation)
STATS = {"mean": "num", "n": "num", "sd": "num", "n_raters": "num"}
CONSTANTS = {"true": True, "false": False, "null": None}
_OUTCOME_NAME = re.compile(r"[a-z][a-z0-9_]*")
# a field every system has although the schema does not list it: engine.install_ok / config.install_ok,
# else "produced audio" (see verdict._system_field)
SYNTHETIC_FIELDS = {"install_ok": "bool"}


class RuleError(UserError):
    pass


# ---------------------------------------------------------------- YAML with line numbers
def _load_yaml(p: Path, data: bytes) -> Any:
    """The shared user-YAML loader (ttsbench.yamlload, issue 18): mappings know their key lines."""
    from ttsbench.yamlload import YamlError, parse_yaml

    try:
        return parse_yaml(data.decode("utf-8").removeprefix("\ufeff"), str(p))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RuleError(f"{p}:{line}: not UTF-8 (byte {data[exc.start]:#04x}); save the rule file as UTF-8") from None
    except YamlError as exc:
        m = re.match(r"^(.*):(\d+):(\d+): not valid YAML: (.*)$", str(exc))
        raise RuleError(f"{m[1]}:{m[2]}: YAML syntax error at column {m[3]}: {m[4]}" if m else str(exc)) from None


# ---------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Expr:
    source: str
    tree: ast.AST
    names: frozenset[str]


_BOOL_OPS = (ast.And, ast.Or)
_CMP_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_ARITH_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _where(node: ast.AST) -> str:
    return f"column {getattr(node, 'col_offset', 0) + 1}"


def parse_expr(src: str) -> Expr:
    """Parse and whitelist-check a condition; ValueError names the column of the first bad part."""
    text = " ".join(str(src).split())  # YAML folded text: newlines are spaces
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an expression ({exc.msg}) at column {exc.offset or 1}") from None
    names: set[str] = set()

    def check(n: ast.AST) -> None:
        if isinstance(n, ast.Expression):
            return check(n.body)
        if isinstance(n, ast.BoolOp) and isinstance(n.op, _BOOL_OPS):
            for v in n.values:
                check(v)
            return None
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not | ast.USub | ast.UAdd):
            return check(n.operand)
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH_OPS:
            check(n.left)
            return check(n.right)
        if isinstance(n, ast.Compare) and all(type(o) in _CMP_OPS for o in n.ops):
            check(n.left)
            for c in n.comparators:
                check(c)
            return None
        if isinstance(n, ast.Call):
            if not (isinstance(n.func, ast.Name) and n.func.id == "abs") or n.keywords or len(n.args) != 1:
                raise ValueError(f"only abs(x) may be called ({_where(n)})")
            return check(n.args[0])
        if isinstance(n, ast.Constant) and (n.value is None or isinstance(n.value, bool | int | float | str)):
            return None
        if isinstance(n, ast.Name):
            if n.id not in CONSTANTS:
                names.add(n.id)
            return None
        raise ValueError(
            f"{type(n).__name__.lower()} is not allowed in a condition ({_where(n)}); "
            "use numbers, 'text', inputs, + - * /, comparisons, and/or/not, abs()"
        )

    check(tree)
    return Expr(text, tree.body, frozenset(names))


def type_of(tree: ast.AST, types: dict[str, str]) -> str:
    """Static type of a condition: 'bool', 'num', 'str', 'null' or 'any'. ValueError on a type clash."""

    def t(n: ast.AST) -> str:
        if isinstance(n, ast.Constant):
            v = n.value
            return "null" if v is None else "bool" if isinstance(v, bool) else "str" if isinstance(v, str) else "num"
        if isinstance(n, ast.Name):
            if n.id in CONSTANTS:
                return "null" if n.id == "null" else "bool"
            return types.get(n.id, "any")
        if isinstance(n, ast.BoolOp):
            for v in n.values:
                need(v, "bool", "and/or")
            return "bool"
        if isinstance(n, ast.UnaryOp):
            if isinstance(n.op, ast.Not):
                need(n.operand, "bool", "not")
                return "bool"
            need(n.operand, "num", "unary minus")
            return "num"
        if isinstance(n, ast.BinOp):
            need(n.left, "num", _ARITH_OPS[type(n.op)])
            need(n.right, "num", _ARITH_OPS[type(n.op)])
            return "num"
        if isinstance(n, ast.Compare):
            parts = [n.left, *n.comparators]
            for op, a, b in zip(n.ops, parts, parts[1:], strict=False):
                sym = _CMP_OPS[type(op)]
                if sym in {"==", "!="}:
                    ta, tb = t(a), t(b)
                    if "any" not in (ta, tb) and "null" not in (ta, tb) and ta != tb:
                        raise ValueError(f"'{sym}' compares {ta} with {tb} ({_where(a)})")
                else:
                    need(a, "num", sym)
                    need(b, "num", sym)
            return "bool"
        if isinstance(n, ast.Call):
            need(n.args[0], "num", "abs()")
            return "num"
        raise ValueError(f"unexpected {type(n).__name__}")  # pragma: no cover - parse_expr whitelists

    def need(n: ast.AST, want: str, op: str) -> None:
        got = t(n)
        if got not in (want, "any"):
            raise ValueError(f"{op} needs {_TYPE_WORD[want]}, got {_TYPE_WORD[got]} ({_where(n)})")

    return t(tree)


_TYPE_WORD = {"bool": "a true/false value", "num": "a number", "str": "text", "null": "null", "any": "a value"}


def clauses(e: Expr) -> list[Expr]:
    """The top-level ``and`` parts of a condition (one clause when it is not an ``and``)."""
    body = e.tree
    parts = body.values if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And) else [body]
    out = []
    for p in parts:
        src = ast.get_source_segment(e.source, p) or ast.unparse(p)
        funcs = {id(x.func) for x in ast.walk(p) if isinstance(x, ast.Call)}
        names = {x.id for x in ast.walk(p) if isinstance(x, ast.Name) and x.id not in CONSTANTS and id(x) not in funcs}
        out.append(Expr(src, p, frozenset(names)))
    return out


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RuleError(f"rule condition: {what} needs a number, got {v!r}")
    return float(v)


def evaluate(tree: ast.AST, env: dict[str, Any]) -> Any:
    """Evaluate a parsed condition; returns True/False, a value, or None (unknown)."""
    if isinstance(tree, ast.Expression):
        tree = tree.body
    if isinstance(tree, ast.Constant):
        return tree.value
    if isinstance(tree, ast.Name):
        return CONSTANTS[tree.id] if tree.id in CONSTANTS else env.get(tree.id)
    if isinstance(tree, ast.BoolOp):
        vals = [evaluate(v, env) for v in tree.values]
        vals = [None if v is None else bool(v) for v in vals]
        if isinstance(tree.op, ast.And):
            return False if False in vals else (None if None in vals else True)
        return True if True in vals else (None if None in vals else False)
    if isinstance(tree, ast.UnaryOp):
        v = evaluate(tree.operand, env)
        if v is None:
            return None
        if isinstance(tree.op, ast.Not):
            return not bool(v)
        return -_num(v, "'-'") if isinstance(tree.op, ast.USub) else _num(v, "'+'")
    if isinstance(tree, ast.Call):
        v = evaluate(tree.args[0], env)
        return None if v is None else abs(_num(v, "abs()"))
    if isinstance(tree, ast.BinOp):
        a, b = evaluate(tree.left, env), evaluate(tree.right, env)
        if a is None or b is None:
            return None
        op = _ARITH_OPS[type(tree.op)]
        a, b = _num(a, op), _num(b, op)
        if op == "/":
            return a / b if b else None
        return {"+": a + b, "-": a - b, "*": a * b}[op]
    if isinstance(tree, ast.Compare):
        parts = [evaluate(x, env) for x in (tree.left, *tree.comparators)]
        results: list[bool | None] = []
        for op, a, b in zip(tree.ops, parts, parts[1:], strict=False):
            sym = _CMP_OPS[type(op)]
            if a is None or b is None:
                results.append(None)
            elif sym == "==":
                results.append(a == b)
            elif sym == "!=":
                results.append(a != b)
            else:
                x, y = _num(a, sym), _num(b, sym)
                results.append({"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[sym])
        return False if False in results else (None if None in results else True)
    raise RuleError(f"rule condition: unknown node {type(tree).__name__}")  # pragma: no cover


# ---------------------------------------------------------------- the results schema (metric paths)
def _schema_type(node: dict[str, Any]) -> str:
    types = node.get("type")
    if types is None and "enum" in node:
        types = sorted({type(x).__name__ for x in node["enum"]})
        types = ["string" if x == "str" else x for x in types]
    if types is None and "const" in node:
        types = ["number" if isinstance(node["const"], int | float) else "string"]
    types = [types] if isinstance(types, str) else list(types or [])
    types = [x for x in types if x != "null"]
    kinds = {{"integer": "num", "number": "num", "boolean": "bool", "string": "str"}.get(x, "any") for x in types}
    return kinds.pop() if len(kinds) == 1 else "any"


def field_type(source: str, dotted: str) -> str:
    """Type of a metric path in results.json (per system, or in the gemma record). ValueError if unknown."""
    schema = results_schema()  # the one loader (cached, read-only here)
    defs = schema["$defs"]
    if source == "results" and dotted in SYNTHETIC_FIELDS:
        return SYNTHETIC_FIELDS[dotted]
    node: dict[str, Any] = defs["system"] if source == "results" else defs["gemma"]
    walked: list[str] = []
    for part in dotted.split("."):
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties")
        if props is None:
            if node.get("type") == "object":  # free-form object (config): anything below is allowed
                return "any"
            raise ValueError(f"{'.'.join(walked)} is a {_schema_type(node)} value, it has no field {part!r}")
        if part not in props:
            prefix = ".".join([*walked, ""])
            known = [prefix + k for k in props]
            near = difflib.get_close_matches(prefix + part, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(sorted(known))})"
            raise ValueError(f"no field {prefix + part!r} in results.json's schema{hint}")
        walked.append(part)
        node = props[part]
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    return _schema_type(node)


def _value_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    return "num" if isinstance(v, int | float) else "str" if isinstance(v, str) else "other"


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
    type: str = "any"


@dataclass(frozen=True)
class Outcome:
    outcome: str
    when: Expr | None
    reason: str
    line: int = 0


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
    requires: list[Outcome] = field(default_factory=list)
    gate_outcome: str = "failed_gate_gemma_drift"
    raw: dict[str, Any] = field(default_factory=dict)

    def rating_inputs(self) -> set[str]:
        return {n for n, s in self.inputs.items() if s.source == "ratings"}


def _unknown_keys(where: str, d: YamlMap, allowed: set[str] | dict[str, bool], path: Path) -> None:
    for k in d:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), list(allowed), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise RuleError(
                f"{path}:{d.line_of(k)}: unknown field {k!r} in {where} ({hint}allowed: {', '.join(sorted(allowed))})"
            )


def _need_map(v: Any, where: str, path: Path, line: Any) -> YamlMap:
    if not isinstance(v, dict):
        raise RuleError(f"{path}:{line}: {where} must be a mapping")
    return v


def _need_str(d: YamlMap, key: str, where: str, p: Path) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise RuleError(f"{p}:{d.line_of(key)}: {where}.{key} must be text, got {v!r}")
    return v


def load_rules(path: str | Path) -> RuleSet:
    """Parse and check a rule file; every error names the file and line."""
    p = Path(path)
    if not p.is_file():
        raise RuleError(f"{p}: no such rule file")
    data = p.read_bytes()
    top = _need_map(_load_yaml(p, data), "the rule file", p, 1)
    _unknown_keys("the rule file", top, TOP_KEYS, p)
    for k, required in TOP_KEYS.items():
        if required and k not in top:
            raise RuleError(f"{p}:1: missing required field {k!r}")
    if isinstance(top["rule_version"], bool) or not isinstance(top["rule_version"], int):
        raise RuleError(f"{p}:{top.line_of('rule_version')}: rule_version must be a whole number")
    name_ = _need_str(top, "name", "the rule", p)
    inputs: dict[str, InputSpec] = {}
    ins = _need_map(top["inputs"], "inputs", p, top.line_of("inputs"))
    for name, spec in ins.items():
        line = ins.line_of(name)
        if (
            not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name))
            or name in CONSTANTS
            or name in {"and", "or", "not", "abs"}
        ):
            raise RuleError(f"{p}:{line}: bad input name {name!r}")
        spec = _need_map(spec, f"input {name!r}", p, line)
        _unknown_keys(f"input {name!r}", spec, INPUT_KEYS, p)
        src = spec.get("source")
        if src not in SOURCES:
            raise RuleError(
                f"{p}:{spec.line_of('source')}: input {name!r}: source must be one of {', '.join(sorted(SOURCES))}"
            )
        if src in {"results", "ratings"}:
            _need_str(spec, "system", f"input {name!r}", p)
        if src == "gemma" and "system" in spec:
            raise RuleError(f"{p}:{spec.line_of('system')}: input {name!r}: a gemma input has no 'system'")
        typ = "any"
        if src in {"results", "gemma"}:
            fld = _need_str(spec, "field", f"input {name!r}", p)
            if "stat" in spec:
                raise RuleError(f"{p}:{spec.line_of('stat')}: input {name!r}: 'stat' is for ratings inputs")
            try:
                typ = field_type(src, fld)
            except ValueError as exc:
                raise RuleError(f"{p}:{spec.line_of('field')}: input {name!r}: {exc}") from None
        else:
            if "field" in spec:
                raise RuleError(f"{p}:{spec.line_of('field')}: input {name!r}: a ratings input has 'stat', not 'field'")
            stat = spec.get("stat", "mean")
            if stat not in STATS:
                raise RuleError(
                    f"{p}:{spec.line_of('stat')}: input {name!r}: stat must be one of "
                    f"{', '.join(sorted(STATS))}, got {stat!r}"
                )
            typ = STATS[stat]
        if "default" in spec:
            dt = _value_type(spec["default"])
            if typ == "any":
                typ = dt if dt in {"bool", "num", "str"} else "any"
            elif dt != typ:
                raise RuleError(
                    f"{p}:{spec.line_of('default')}: input {name!r}: default {spec['default']!r} "
                    f"is {_TYPE_WORD.get(dt, dt)}, but {spec.get('field') or 'the value'} is "
                    f"{_TYPE_WORD[typ]}"
                )
        inputs[name] = InputSpec(
            name,
            src,
            spec.get("system"),
            spec.get("field"),
            spec.get("stat", "mean") if src == "ratings" else None,
            spec.get("default"),
            "default" in spec,
            typ,
        )
    types = {n: s.type for n, s in inputs.items()}

    def outcome(o: Any, where: str, line: Any, need_when: bool) -> Outcome:
        o = _need_map(o, where, p, line)
        _unknown_keys(where, o, OUTCOME_KEYS if need_when else DEFAULT_KEYS, p)
        name = o.get("outcome")
        if not isinstance(name, str) or not _OUTCOME_NAME.fullmatch(name):
            raise RuleError(f"{p}:{o.line_of('outcome')}: {where} needs 'outcome': a snake_case name, got {name!r}")
        if "reason" in o and not isinstance(o["reason"], str):
            raise RuleError(f"{p}:{o.line_of('reason')}: {where}.reason must be text")
        expr = None
        if need_when:
            if "when" not in o:
                raise RuleError(f"{p}:{o.line}: {where} needs 'when'")
            w = o["when"]
            at = f"{p}:{o.line_of('when')}"
            if not isinstance(w, str):
                raise RuleError(f"{at}: 'when' must be a condition in quotes (true/false), got {w!r}")
            try:
                expr = parse_expr(w)
            except ValueError as exc:
                raise RuleError(f"{at}: bad condition {w!r}: {exc}") from None
            unknown = sorted(expr.names - set(inputs))
            if unknown:
                raise RuleError(f"{at}: condition uses undeclared input(s) {', '.join(unknown)}")
            try:
                t = type_of(expr.tree, types)
            except ValueError as exc:
                raise RuleError(f"{at}: bad condition {w!r}: {exc}") from None
            if t != "bool":
                raise RuleError(
                    f"{at}: condition {w!r} is {_TYPE_WORD[t]}, not true/false; write a comparison, e.g. 'x >= 10'"
                )
        return Outcome(name, expr, str(o.get("reason", "")), o.line)

    def outcome_list(key: str) -> list[Outcome]:
        outs = top[key]
        if not isinstance(outs, list) or not outs:
            raise RuleError(f"{p}:{top.line_of(key)}: {key} must be a non-empty list")
        return [outcome(o, f"{key}[{j}]", top.line_of(key) + j, True) for j, o in enumerate(outs)]

    outcomes = outcome_list("outcomes")
    requires = outcome_list("requires") if "requires" in top else []
    default = outcome(top["default"], "default", top.line_of("default"), False)
    rs = RuleSet(
        p,
        hashlib.sha256(data).hexdigest(),
        top["rule_version"],
        name_,
        str(top.get("description", "")).strip(),
        inputs,
        outcomes,
        default,
        requires,
        raw=dict(top),
    )
    if "gate" in top:
        g = _need_map(top["gate"], "gate", p, top.line_of("gate"))
        if "gemma_max_drift" in g:
            raise RuleError(
                f"{p}:{g.line_of('gemma_max_drift')}: gate.gemma_max_drift is not read from rule files: the one "
                "drift threshold is gemma_guard_max_drift (inventory/extra var), recorded in results.json "
                "gemma.max_drift — remove this line"
            )
        _unknown_keys("gate", g, GATE_KEYS, p)
        if "outcome" in g:
            v = g["outcome"]
            if not isinstance(v, str) or not _OUTCOME_NAME.fullmatch(v):
                raise RuleError(f"{p}:{g.line_of('outcome')}: gate.outcome must be a snake_case name, got {v!r}")
            rs.gate_outcome = v
    return rs
