import sys

from replyx_rollback.cli import main

sys.exit(main())
