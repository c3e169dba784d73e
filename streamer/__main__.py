import sys

from streamer.cli.main import run

sys.exit(run())
