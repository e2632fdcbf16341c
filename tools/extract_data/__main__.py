"""``python -m tools.extract_data``: see :mod:`tools.extract_data.cli`."""

import sys

from tools.extract_data.cli import main

if __name__ == "__main__":
    sys.exit(main())
