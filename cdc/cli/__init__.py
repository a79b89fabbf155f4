"""The `cdc` command line."""

from cdc.cli.app import app, main, make_store, setup_logging

__all__ = ["app", "main", "make_store", "setup_logging"]
