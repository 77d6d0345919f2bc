"""``python -m faststream_callout``: the ``faststream-callout`` command."""

import sys

from faststream_callout.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
