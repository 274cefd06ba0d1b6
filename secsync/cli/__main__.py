"""``python -m secsync.cli``: the ``secsync`` command."""

import sys

from secsync.cli.main import main

sys.exit(main())
