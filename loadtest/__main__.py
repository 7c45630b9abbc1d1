"""``python -m loadtest``: run one scenario (see `loadtest.cli`)."""

from loadtest.cli import entry

if __name__ == "__main__":  # not when a spawned worker process imports the parent's main module
    entry()
