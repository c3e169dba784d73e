import sys

from streamer.cli import run

sys.exit(run())
