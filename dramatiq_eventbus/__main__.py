"""``python -m dramatiq_eventbus``: see :mod:`dramatiq_eventbus.cli`."""

import sys

from .cli import main

sys.exit(main())
