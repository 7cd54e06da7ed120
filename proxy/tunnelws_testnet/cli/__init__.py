"""Subcommands of ``tunnelws`` that belong to the test network."""
