"""The `wsol` command: one parser (wsol.cli.parser) built from a module per subcommand."""

from wsol.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
