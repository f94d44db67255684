"""Check an inventory's YAML files with the project's YAML loader before Ansible reads them.

Ansible only *warns* about a duplicate key (and keeps the last one), so a ``ttsbench_*`` setting written twice
silently loses one value; a tab gives an obscure parser error. ``ttsbench run``/``demo`` call
:func:`check_inventory` first: the inventory file (if YAML) and every YAML file under ``group_vars/`` and
``host_vars/`` beside it must load cleanly, or the command stops with ``FILE:LINE:COL: problem`` (exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

from ttsbench.yamlload import load_yaml

_YAML_SUFFIXES = {".yml", ".yaml", ".json", ""}


def inventory_yaml_files(inventory: str | os.PathLike) -> list[Path]:
    """The YAML files Ansible would read for this inventory (file or folder), sorted."""
    inv = Path(inventory)
    base = inv if inv.is_dir() else inv.parent
    files: list[Path] = []
    if inv.is_dir():
        files += [p for p in sorted(inv.iterdir()) if p.is_file() and p.suffix in {".yml", ".yaml"}]
    elif inv.suffix in {".yml", ".yaml"}:
        files.append(inv)
    for sub in ("group_vars", "host_vars"):
        d = base / sub
        if d.is_dir():
            files += [
                p
                for p in sorted(d.rglob("*"))
                if p.is_file() and p.suffix in _YAML_SUFFIXES and not p.name.startswith(".")
            ]
    return files


def check_inventory(inventory: str | os.PathLike) -> list[Path]:
    """Load every YAML file of the inventory; raises :class:`ttsbench.yamlload.YamlError` on the first bad one."""
    files = inventory_yaml_files(inventory)
    for f in files:
        load_yaml(f, "inventory file", ansible=True)
    return files
