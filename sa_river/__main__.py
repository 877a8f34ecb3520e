import sys

from sa_river.cli import main

sys.exit(main())
