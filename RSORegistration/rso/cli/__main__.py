"""``python -m rso.cli ...`` is ``rso-registration ...`` (the launcher restarts the command line this way)."""

import sys

from rso.cli import main

sys.exit(main())
