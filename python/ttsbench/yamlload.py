"""The one YAML loader for every file a user writes (utterances, decision rules, inventories' ttsbench files).

PyYAML's ``safe_load`` silently keeps the last of two equal keys, and its errors are multi-line texts whose
position is easy to lose. This loader is ``yaml.SafeLoader`` plus:

- every error is one line ``FILE:LINE:COLUMN: what is wrong`` (1-based, as editors count) and a
  :class:`YamlError` (a :class:`~ttsbench.errors.UserError`, exit code 2);
- a duplicate key in a mapping is an error that names both lines;
- a tab character is an error (YAML forbids tabs for indentation; PyYAML's own message for it is obscure,
  and a tab elsewhere is almost always an accident — write ``\\t`` inside double quotes for a real tab);
- the file must be UTF-8; control characters (NUL etc.) are reported with their position;
- mappings come back as :class:`YamlMap` — a plain ``dict`` that also knows where it and each key stood
  (``.line``, ``.column``, ``.key_lines[key]``), so callers can name the line of a bad *value* too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ttsbench.errors import UserError


class YamlError(UserError):
    """A user YAML file is unreadable or not valid YAML; the message is ``FILE:LINE:COL: problem``."""


class YamlMap(dict):
    """A mapping read from YAML: a dict that also records its position and the line of each key."""

    line: int = 0
    column: int = 0
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}

    @property
    def lines(self) -> dict[Any, int]:
        """Alias of ``key_lines`` (the name scoring/rules.py used for its own line-keeping mapping)."""
        return self.key_lines

    def line_of(self, key: Any) -> int:
        """Line of ``key`` (the mapping's own line when the key is absent)."""
        return self.key_lines.get(key, self.line)


def _where(name: str, mark: Any) -> str:
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{name}"


class _Loader(yaml.SafeLoader):
    source_name = "<yaml>"

    def construct_yaml_map(self, node: yaml.MappingNode):  # type: ignore[override]
        data = YamlMap()
        data.line = node.start_mark.line + 1
        data.column = node.start_mark.column + 1
        yield data
        own = {id(k) for k, _v in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self.flatten_mapping(node)  # ``<<: *anchor`` merges first; the mapping's own keys override them
        own_keys: set[Any] = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise YamlError(
                    f"{_where(self.source_name, key_node.start_mark)}: a mapping key must be a "
                    f"plain value, not a {type(key).__name__}"
                ) from None
            if id(key_node) not in own:
                data[key] = self.construct_object(value_node, deep=True)
                data.key_lines[key] = key_node.start_mark.line + 1
                continue
            if key in own_keys:
                raise YamlError(
                    f"{_where(self.source_name, key_node.start_mark)}: duplicate key {key!r} "
                    f"(first at line {data.key_lines[key]}); a YAML mapping keeps only one of them — remove one"
                )
            own_keys.add(key)
            data[key] = self.construct_object(value_node, deep=True)
            data.key_lines[key] = key_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


class _AnsibleLoader(_Loader):
    """For inventories: Ansible's own tags (``!vault`` encrypted strings, ``!unsafe``) are kept as strings."""


def _ansible_string(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None


for _tag in ("!vault", "!unsafe", "!vault-encrypted"):
    _AnsibleLoader.add_constructor(_tag, _ansible_string)


def _first_tab(text: str) -> tuple[int, int] | None:
    i = text.find("\t")
    if i < 0:
        return None
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def _describe_yaml_error(name: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text = f"{problem} ({context})" if context else str(problem)
    return f"{_where(name, mark)}: not valid YAML: {' '.join(text.split())}"


def parse_yaml(text: str, name: str = "<yaml>", ansible: bool = False) -> Any:
    """Parse YAML text; ``name`` is used in messages (normally the file path); ``ansible`` accepts Ansible's
    ``!vault``/``!unsafe`` tags (inventory files)."""
    tab = _first_tab(text)
    if tab is not None:
        raise YamlError(
            f"{name}:{tab[0]}:{tab[1]}: tab character; YAML must be indented with spaces "
            "(inside double quotes write \\t for a tab)"
        )
    bad = next((i for i, ch in enumerate(text) if _unprintable(ch)), None)
    if bad is not None:
        line = text.count("\n", 0, bad) + 1
        col = bad - (text.rfind("\n", 0, bad) + 1) + 1
        raise YamlError(
            f"{name}:{line}:{col}: control character {ord(text[bad]):#06x} is not allowed in YAML; remove it"
        )
    loader = (_AnsibleLoader if ansible else _Loader)(text)
    loader.source_name = name
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise YamlError(_describe_yaml_error(name, exc)) from None
    finally:
        loader.dispose()


def _unprintable(ch: str) -> bool:
    """What PyYAML's reader refuses (YAML 1.1 printable set), checked here to report line and column."""
    o = ord(ch)
    if o < 0x20:
        return ch not in "\t\n\r"
    return 0x7F <= o <= 0x84 or 0x86 <= o <= 0x9F or 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF)


def load_yaml(path: str | os.PathLike, what: str = "YAML file", ansible: bool = False) -> Any:
    """Read and parse a user YAML file (``what`` names it in the 'not found' message)."""
    p = Path(path)
    if not p.is_file():
        raise YamlError(f"{p}: {what} not found")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise YamlError(f"{p}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlError(f"{p}:{line}:{col}: not UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8") from None
    return parse_yaml(text.removeprefix("\ufeff"), str(p), ansible)
