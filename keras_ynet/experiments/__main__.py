"""``python -m keras_ynet.experiments``: see :mod:`keras_ynet.experiments.cli`."""

import sys

from keras_ynet.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
