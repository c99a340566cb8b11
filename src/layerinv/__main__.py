"""`python -m layerinv` runs the command line."""

import sys

from layerinv.cli import main

sys.exit(main())
