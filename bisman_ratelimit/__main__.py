import sys

from bisman_ratelimit.ops.cli import main

sys.exit(main())
