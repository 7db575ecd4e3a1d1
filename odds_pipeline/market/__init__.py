"""Odds arithmetic, de-vig methods and the canonical quote contract with its validator (no I/O)."""
