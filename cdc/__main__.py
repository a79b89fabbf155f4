"""`python -m cdc` runs the command line."""

from cdc.cli.app import main

main()
