"""`python -m zeroseg ...` (and `torchrun -m zeroseg ...`) run the `zeroseg` CLI."""

from zeroseg.cli import main

main()
