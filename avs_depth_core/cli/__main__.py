"""`python -m avs_depth_core.cli COMMAND ...` (what torchrun runs: `torchrun ... -m avs_depth_core.cli train ...`)."""

import sys

from avs_depth_core.cli import main

sys.exit(main())
