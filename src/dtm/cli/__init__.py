"""The `dtm` command line."""
