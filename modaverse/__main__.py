"""``python -m modaverse``, which is also what ``accelerate launch -m modaverse train`` runs."""

import sys

from modaverse.cli.main import main

sys.exit(main())
