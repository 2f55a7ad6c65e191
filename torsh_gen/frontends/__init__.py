"""Frontends: model files and framework objects → IR Graph."""
