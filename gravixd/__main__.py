"""`python -m gravixd` is the `gravixd` command."""

import sys

from .cli import main

sys.exit(main())
