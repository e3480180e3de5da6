"""Which code is running: the package version and the git commit of its checkout. Standard
library only (`analysis` and the command lines read it without torch)."""

from __future__ import annotations

import functools
import os
import subprocess

from . import __version__

NOT_GIT = "not a git checkout"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit (``git rev-parse HEAD``) of the checkout this package runs from, or `NOT_GIT`
    (an installed copy, no git, …); computed once per process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        r = subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel", "HEAD"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return NOT_GIT
    lines = r.stdout.split()
    if r.returncode != 0 or len(lines) != 2 or os.path.realpath(lines[0]) != os.path.realpath(root):
        return NOT_GIT  # not a checkout, or this package lies inside some other repository
    return lines[1]


def version_line(prog: str) -> str:
    """What ``--version`` prints: ``<prog> <version> (git <commit>)``."""
    commit = git_commit()
    return f"{prog} {__version__} ({'git ' + commit if commit != NOT_GIT else commit})"
