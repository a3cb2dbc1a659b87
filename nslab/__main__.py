"""`python3 -m nslab` is the `nslab` command (for when the console script isn't on PATH)."""

import sys

from .cli import main

sys.exit(main())
