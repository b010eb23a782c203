"""`python -m fishertune.cli` (what `torchrun ... -m fishertune.cli train ...` runs on every process)."""

import sys

from fishertune.cli.main import main

sys.exit(main())
