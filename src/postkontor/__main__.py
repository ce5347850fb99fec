"""`python -m postkontor`: the same as the `postkontor` command."""

import sys

from postkontor.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
