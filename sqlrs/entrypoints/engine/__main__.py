import sys

from sqlrs.entrypoints.engine.server import main

sys.exit(main())
