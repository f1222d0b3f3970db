"""`python -m zeroseg.export.cli`: the `zeroseg-export` command."""

from zeroseg.export.cli import main

main()
