"""``python -m analytic_denoisers`` runs the command-line interface."""

import sys

from .cli import main

sys.exit(main())
