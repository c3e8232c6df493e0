"""User errors: one clear line on stderr and exit status 2, before any compute."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from registry import UnknownNameError

USAGE_EXIT_CODE = 2


class UsageError(Exception):
    """Bad input from the user (config, command line, workdir): not a bug in archlab."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a UsageError (one line, exit 2), not usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT_CODE)


def exit_on_usage_error(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int]:
    """Wraps an entry point so that bad input ends with one line and status 2, no traceback."""

    def wrapped(argv: list[str]) -> int:
        try:
            return main(argv) or 0
        except (UsageError, UnknownNameError) as e:
            fail(" ".join(str(e).split()))

    return wrapped
