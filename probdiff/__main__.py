import sys

from probdiff.cli import main

sys.exit(main())
