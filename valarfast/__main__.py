"""``python -m valarfast [command]``: see :mod:`valarfast.cli`."""

import sys

from valarfast.cli import main

if __name__ == "__main__":
    sys.exit(main())
