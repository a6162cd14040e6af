"""One-line progress messages, routed the way Keras routes its own.

With Keras' interactive logging on (the default) a message goes to stdout,
like a `fit` progress line; after `keras.config.disable_interactive_logging()`
it goes to `absl.logging.info`, so jobs that log to files get it there.
"""

import sys

import keras
from absl import logging


def info(message):
    """Writes one progress line."""
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    else:
        logging.info(message)
