"""Sub-commands of the ``ttsbench`` CLI; one module per command (group), auto-discovered by ttsbench.cli."""
