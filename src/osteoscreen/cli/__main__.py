"""`python -m osteoscreen.cli ...`, the same as the `osteoscreen` command."""

import sys

from osteoscreen.cli.entry import main

sys.exit(main())
