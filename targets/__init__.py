"""Hardware target descriptions (TOML), shipped in the wheel as ``torsh_gen.targets``."""
