"""``python -m loadtest``: run one scenario (see `loadtest.cli`)."""

from loadtest.cli import entry

entry()
