"""`python -m dtm` is the `dtm` command."""

from dtm.cli.main import main

main()
