"""What the `study` and `analysis` command lines share beyond -q/-v: an argparse parser that
suggests the closest flag or sub-command for a mistyped one, and a quiet exit when the reader
of standard output goes away (``… | head -3``). Standard library only (`analysis` uses it)."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys

SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what the shell reports for a Unix tool whose reader closed the pipe


def _words(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """Every flag of ``parser`` and of its sub-commands (recursively), and every sub-command name."""
    flags, commands = set(), set()
    for action in parser._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands.add(name)
                f, c = _words(sub)
                flags |= f
                commands |= c
    return flags, commands


def suggestion(parser: argparse.ArgumentParser, message: str, argv: list[str]) -> str:
    """`` (did you mean …?)`` for the flags in ``argv`` and the sub-command in ``message`` that are
    unknown but close to a known one; '' when nothing is close."""
    flags, commands = _words(parser)
    hints = []
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and flag not in flags:
            close = difflib.get_close_matches(flag, sorted(flags), n=1, cutoff=0.6)
            if close:
                hints.append((close[0], flag))
    m = re.search(r"invalid choice: '([^']*)'", message)
    if m:
        close = difflib.get_close_matches(m.group(1), sorted(commands), n=1, cutoff=0.6)
        if close:
            hints.append((close[0], m.group(1)))
    if len(hints) == 1:
        return f" (did you mean {hints[0][0]}?)"
    return f" (did you mean {'; '.join(f'{a} for {b}' for a, b in hints)}?)" if hints else ""


class SuggestingParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors name the closest known flag or sub-command."""

    argv: list[str] = []  # the arguments being parsed, set by parse_args of the top parser

    def parse_args(self, args=None, namespace=None):
        SuggestingParser.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str):
        top = self
        while getattr(top, "_top", None) is not None:
            top = top._top
        super().error(message + suggestion(top, message, SuggestingParser.argv))

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(**kwargs)
        top = self
        original = action.add_parser

        def add_parser(name, **kw):
            sub = original(name, **kw)
            sub._top = top
            return sub
        action.add_parser = add_parser
        return action


def closed_pipe() -> int:
    """After a BrokenPipeError on standard output: point it at /dev/null (so that the interpreter's
    last flush stays silent) and return the status a Unix tool gets from SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file behind sys.stdout (a test's stand-in)
        pass
    return SIGPIPE_STATUS
