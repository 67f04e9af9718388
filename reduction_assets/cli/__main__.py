"""``python -m reduction_assets.cli``: the same as ``reduction-assets``."""

import sys

from reduction_assets.cli.main import main

sys.exit(main())
