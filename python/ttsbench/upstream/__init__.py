"""Facts about software ttsbench does not control, read from the registry's own packages (contracts)."""
