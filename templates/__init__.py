"""Jinja templates of torsh-gen's generators, one folder per generator (shipped in the wheel)."""
