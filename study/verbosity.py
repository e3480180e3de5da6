"""The -q / -v flags of the `study` and `analysis` command lines and the logging level they
give. Standard library only (`analysis` uses it without torch)."""

from __future__ import annotations

import argparse
import logging

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def verbosity_flags(quiet_help: str, default=0) -> argparse.ArgumentParser:
    """A parent parser with -q / -v (counted), for the command and each subcommand (``cmd -v
    sub …`` and ``cmd sub … -v``; on a subcommand ``default=argparse.SUPPRESS`` keeps the
    counts given before it). ``quiet_help``: what -q silences for this command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-q", "--quiet", action="count", default=default, help=quiet_help)
    p.add_argument("-v", "--verbose", action="count", default=default,
                   help="more log output (-v: info, -vv: debug)")
    return p


def log_level(quiet: int, verbose: int) -> int:
    """The logging level of -q / -v: WARNING by default, ERROR with -q, INFO with -v, DEBUG with -vv."""
    return {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, min(verbose - quiet, 2)),
                                                                        logging.DEBUG)
