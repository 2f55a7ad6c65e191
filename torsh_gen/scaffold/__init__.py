"""Jinja-driven generators of projects around a compiled model (DESIGN.md rule 6)."""
