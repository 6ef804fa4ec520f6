"""``python -m torchslim`` is the ``torchslim`` command (torchrun launches it this way)."""

import sys

from torchslim.cli import main

sys.exit(main())
