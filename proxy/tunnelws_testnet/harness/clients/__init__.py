"""Clients that follow the harness contract (see docs/harness.md)."""
