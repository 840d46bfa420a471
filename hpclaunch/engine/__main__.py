"""``python -m hpclaunch.engine``: see :mod:`hpclaunch.engine.app`."""

import sys

from .app import main

sys.exit(main())
