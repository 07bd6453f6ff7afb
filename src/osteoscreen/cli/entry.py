"""`main`: runs a command and prints bad input (InputError, its argument names reworded into flags by `in_flags`),
warnings and storage failures as one line each.

Exit codes: 0 success, 2 bad input or usage, 1 internal error, 130 interrupted, 143 terminated.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import re
import sys
from collections.abc import Callable, Iterator

from osteoscreen.cli.parser import build_parser
from osteoscreen.core.errors import InputError, InputWarning, NotDelivered
from osteoscreen.core.utils import keep_freed_memory


def show_warnings_as_lines(wording: Callable[[str], str] = str) -> None:
    """Print every warning as one line `osteoscreen: warning: ...` on stderr (worded by `wording`), without Python's
    source lines; every InputWarning is shown (each names its file), not once per place."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        text = wording(" ".join(str(message).split()))
        print(f"osteoscreen: warning: {text}", file=sys.stderr, flush=True)

    warnings.simplefilter("always", InputWarning)
    warnings.showwarning = show


def keep_matplotlib_cache_out_of_home() -> None:
    """The command line writes nothing outside its output folder but temporary files: matplotlib's font cache goes
    to a per-user temporary folder instead of ~/.cache or ~/.config (a user's own MPLCONFIGDIR is kept)."""
    import os
    import tempfile

    if "MPLCONFIGDIR" not in os.environ:
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        os.environ["MPLCONFIGDIR"] = os.path.join(tempfile.gettempdir(), f"osteoscreen-matplotlib-{uid}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup (partial outputs removed) runs the same way."""


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """For the block, turn SIGTERM (a service manager, `kill`, a batch system's time limit) into Terminated in the
    main thread; then give SIGTERM its earlier handler back, so that one coming once the command has ended (while
    Python shuts down, where a raised Terminated would be printed as an ignored exception) acts as it would have."""
    import signal
    import threading

    def stop(signum, frame):
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def release_quietly(stop: BaseException) -> None:
    """Free the frames an interruption left behind now, their finalizers' errors silenced: the signal can land in
    a constructor (tqdm's progress bar), and the half-built object's __del__ then fails, which Python would print
    as a traceback after the command's one line."""
    import gc

    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        while stop is not None:  # the exception and those it was raised during (a cleanup that failed too)
            stop.__traceback__, stop = None, stop.__context__
        gc.collect()
    finally:
        sys.unraisablehook = hook


#: Storage failures reported as one line with the path: a full disk (exit 1: the command was right) or a
#: location that cannot be written (exit 2: choose another).
STORAGE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                  errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                  errno.EROFS: "read-only file system"}


#: Library arguments whose command-line flag is not their name with dashes (the rest map by the parser's dests).
FLAG_OF = {"image_format": "--format", "calibration": "--calibrate", "groups": "--signal", "model_dir": "--model",
           "data_dir": "--data", "landmark_model_dir": "--landmarks-model"}
#: `name: ` at the start of a message, or `name=value` standing alone (not inside a path or URL such as seed=3/x.png).
ARGUMENT = re.compile(r"^([a-z][a-z0-9_]*)(?=: )|(?<![\w/.\-=?&])([a-z][a-z0-9_]*)=(['\"]?)([^'\"\s,;)]*)\3")


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{argument name: its long flag} for every option of the parser and its subcommands, and FLAG_OF."""
    flags: dict[str, str] = {}
    pending = [parser]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += list(action.choices.values())
            elif action.option_strings and action.option_strings[-1].startswith("--"):
                positive = isinstance(action, argparse.BooleanOptionalAction)  # --x, not --no-x
                flags.setdefault(action.dest, action.option_strings[0 if positive else -1])
    return flags | FLAG_OF


def in_flags(message: str, flags: dict[str, str]) -> str:
    """A library message in the command line's terms. The library names arguments as Python does (`folds: ...` at
    the start of a message, `folds=1` inside it); each one the command line has a flag for becomes that flag."""
    def flag(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in flags:
            return match.group(0)
        value = match.group(4)
        return flags[name] if match.group(1) or not value else f"{flags[name]} {value}"

    return ARGUMENT.sub(flag, message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (2), --help and --version (0): argparse has printed them
        return int(stop.code or 0)
    flags = functools.cache(lambda: flags_of(parser))  # built only when a message is printed
    keep_freed_memory()
    show_warnings_as_lines(lambda text: in_flags(text, flags()))
    keep_matplotlib_cache_out_of_home()
    with terminate_like_interrupt():
        return _run(args, flags)


def _run(args: argparse.Namespace, flags: Callable[[], dict[str, str]]) -> int:
    """Run the parsed command: its exit code, every failure said in one line (module docstring)."""
    try:
        args.run(args)
    except InputError as error:
        for line in str(error).splitlines():
            print(f"osteoscreen: error: {in_flags(line, flags())}", file=sys.stderr)
        return 2
    except NotDelivered as error:
        for line in error.lines:
            print(f"osteoscreen: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (Terminated)
        release_quietly(stop)
        terminated = isinstance(stop, Terminated)
        print(f"osteoscreen: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as error:  # a storage failure, or an internal error: one line, no traceback unless asked for
        if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
            where = f"{error.filename}: " if error.filename else ""
            print(f"osteoscreen: error: {where}{STORAGE_ERRORS[error.errno]} ({error.strerror}); nothing was left "
                  "half-written", file=sys.stderr)
            return 1 if error.errno in (errno.ENOSPC, errno.EDQUOT) else 2
        print(f"osteoscreen: internal error: {type(error).__name__}: {error} "
              "(set OSTEOSCREEN_DEBUG=1 for the traceback)", file=sys.stderr)
        import os

        if os.environ.get("OSTEOSCREEN_DEBUG"):
            raise
        return 1
    return 0
