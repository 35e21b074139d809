"""Subcommands of the ``oaken-hw`` command line, one module per family."""
