"""Version information, shaped like ``tf.version``."""

VERSION = "0.1.0"
