import sys

from sa_river.cli import main

if __name__ == "__main__":  # not when multiprocessing's "spawn" re-imports the main module
    sys.exit(main())
