"""Config tree (a package so that installed entry points find it via Hydra's pkg:// search)."""
