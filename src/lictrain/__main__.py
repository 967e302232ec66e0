"""``python -m lictrain``."""

import sys

from lictrain.cli.main import main

sys.exit(main())
