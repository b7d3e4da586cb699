"""``python -m pvae.serving`` runs ``pvae-serve`` (the same as the console script)."""

import sys

from pvae.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
