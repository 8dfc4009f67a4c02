import sys

from lipbound.cli import main

sys.exit(main())
