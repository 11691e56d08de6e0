"""``python -m sseproto``: the same as the ``sseproto`` command."""

import sys

from .cli import main

sys.exit(main())
