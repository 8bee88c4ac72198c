"""``python -m rso.cli ...`` is ``rso-registration ...`` (the worker client starts workers this way)."""

import sys

from rso.cli import main

sys.exit(main())
