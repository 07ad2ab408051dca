"""`python -m keras_incremental.bench`: the class-incremental benchmark."""

import sys

from keras_incremental.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
