"""The `postkontor` command line."""
