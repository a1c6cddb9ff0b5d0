"""``python -m probdiff``: the command line (also the entry point ``torchrun`` launches)."""

import sys

from probdiff.cli import main

if __name__ == "__main__":
    sys.exit(main())
