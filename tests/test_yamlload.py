"""ttsbench.yamlload: one-line FILE:LINE:COL errors, duplicate keys and tabs refused, positions kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsbench.errors import UserError
from ttsbench.yamlload import YamlError, YamlMap, load_yaml, parse_yaml


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: 1\nb: 2\na: 3\n", "f.yaml:3:1: duplicate key 'a' (first at line 1)"),
        ("top:\n  x: 1\n  y: {k: 1, k: 2}\n", "f.yaml:3:13: duplicate key 'k' (first at line 3)"),
        ("a:\n\tb: 1\n", "f.yaml:2:1: tab character"),
        ("a: 'x'\t# comment\n", "f.yaml:1:7: tab character"),
        ("a: [1, 2\nb: 3\n", "f.yaml:2:2: not valid YAML: expected ',' or ']'"),
        ("a: b: c\n", "f.yaml:1:5: not valid YAML: mapping values are not allowed here"),
        ("a: ok\nb: x\x00y\n", "f.yaml:2:5: control character 0x0000"),
        ("? [1, 2]\n: v\n", "f.yaml:1:3: a mapping key must be a plain value"),
    ],
)
def test_errors_are_one_line_with_position(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(YamlError) as ei:
        load_yaml(f)
    msg = str(ei.value)
    assert isinstance(ei.value, UserError) and ei.value.exit_code == 2
    assert "\n" not in msg and msg.startswith(str(tmp_path)), msg
    assert needle in msg, msg


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(YamlError, match=r"f\.yaml:2:7: not UTF-8 \(byte 0xe9\)"):
        load_yaml(f)
    with pytest.raises(YamlError, match="utterances file not found"):
        load_yaml(tmp_path / "nope.yaml", "utterances file")


def test_valid_yaml_keeps_values_and_positions() -> None:
    doc = parse_yaml("# c\nbase: &b {k: 1, j: 2}\nuse:\n  <<: *b\n  k: 3\nlist:\n  - {id: u1}\n", "x")
    assert doc == {"base": {"k": 1, "j": 2}, "use": {"k": 3, "j": 2}, "list": [{"id": "u1"}]}
    assert isinstance(doc, YamlMap) and isinstance(doc, dict)
    assert doc.line_of("use") == 3 and doc["use"].line_of("k") == 5 and doc["list"][0].line == 7
    assert parse_yaml("") is None and parse_yaml('a: "tab\\there"\n') == {"a": "tab\there"}


def test_inventory_files_are_checked_before_ansible_runs(tmp_path: Path, capsys) -> None:
    from ttsbench.cli import main
    from ttsbench.inventory import check_inventory

    repo = Path(__file__).resolve().parents[1]
    for inv in ("rehearsal", "example-homelab", "testhosts"):  # the shipped inventories load cleanly
        assert check_inventory(repo / "inventory" / inv)
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    titan: {ansible_connection: local}\n")
    (inv / "group_vars" / "all.yml").write_text(
        "ttsbench_runs_root: /a\nsecret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  3036\nttsbench_runs_root: /b\n"
    )
    with pytest.raises(YamlError, match=r"all\.yml:5:1: duplicate key 'ttsbench_runs_root' \(first at line 1\)"):
        check_inventory(inv)
    assert main(["run", "bench-voxtral.yml", "-i", str(inv), "--private-data-dir", str(tmp_path / "pdd")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "duplicate key 'ttsbench_runs_root'" in err[0]
    assert not (tmp_path / "pdd").exists()  # ansible-runner never started
