"""Hardware profiles: named lamp maps for common I/O (TOML files, each citing its document)."""
