"""``python -m ftx.cli`` runs the ``ftx`` command."""

from ftx.cli import main

main()
