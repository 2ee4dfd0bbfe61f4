"""``python -m vsfast``: the ``vsfast`` command (see :mod:`vsfast.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
