"""Applying metrics to runs: which metrics and frames, the scoring loops over samples folders and folder
pairs, the sharded finaliser, and the report they write."""
