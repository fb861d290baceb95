"""``python -m eip2nn`` is the ``eip2nn`` command."""

import sys

from eip2nn.cli import main

sys.exit(main())
