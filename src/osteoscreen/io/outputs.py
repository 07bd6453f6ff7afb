"""Where commands write: safe, unique file names for subject ids, output locations checked before any work and
written whole or not at all, and atomic file writes (a reader, or a resumed run, sees the old file or the whole new
one, never a part).

Subject ids come from a user's CSV; they never become paths as they are. Every command that writes a file per
subject (`patches`, `predict`) names it with `subject_file_names` and writes an `index.csv` (subject_id, file)
beside the files, so a reader finds each subject's file without guessing.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from osteoscreen.core.errors import InputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest name stem kept from an id (file systems allow 255 bytes; suffixes and extensions need room).
MAX_STEM = 80
#: Device names Windows refuses as file names, whatever the extension.
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
INDEX_FILE = "index.csv"
#: The list of files an output folder's command wrote (one relative path per line), so that replacing the folder
#: later never deletes a file someone else put there.
MANIFEST = ".osteoscreen-files"
#: The signals that stop a command (Ctrl-C, and SIGTERM: osteoscreen.cli.entry), held back while a finished output
#: takes the place of an earlier one.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def finite_or_null(value: object) -> object:
    """A JSON-ready copy of value with NaN and infinities replaced by None (nested dicts, lists and tuples)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


def strict_json(payload: object, indent: int | None = 2, default=None) -> str:
    """JSON that every parser reads (RFC 8259): an undefined number (NaN, infinity; a PPV with nobody flagged) is
    written null, never as the bare NaN token Python's json writes by default. default: as json.dumps's."""
    return json.dumps(finite_or_null(payload), indent=indent, allow_nan=False, default=default) + "\n"


def _cleaned(subject_id: str) -> str:
    name = _UNSAFE.sub("_", subject_id).lstrip(".-")[:MAX_STEM] or "subject"
    return f"_{name}" if name.split(".")[0].upper() in _RESERVED else name


def subject_file_names(subject_ids: Sequence[str]) -> list[str]:
    """A file-name stem per subject id, in input order, safe and unique on every common file system.

    A name holds only letters, digits, '.', '_' and '-', starts with neither '.' nor '-', has at most 80 characters
    before its suffix and is no Windows device name. An id that already is such a name, and differs from every other
    id in more than letter case, is its own name. Any other id gets its cleaned form followed by '~' and 12 hex
    digits of its SHA-256: '~' never survives cleaning, so a suffixed name cannot equal an unchanged id, and two
    different ids share a suffixed name only if their hashes collide. A name depends only on its id (and, for the
    letter-case rule, on which other ids exist), never on input order.
    """
    folded: dict[str, int] = {}
    for subject_id in subject_ids:
        folded[subject_id.casefold()] = folded.get(subject_id.casefold(), 0) + 1
    names = []
    for subject_id in subject_ids:
        name = _cleaned(subject_id)
        if name != subject_id or folded[subject_id.casefold()] > 1:
            digest = hashlib.sha256(subject_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
            name = f"{name}~{digest}"
        names.append(name)
    if len({name.casefold() for name in names}) != len(names):
        raise InputError("subject ids: two ids map to the same file name (duplicate subject ids?)")
    return names


def write_index(folder: Path, subject_ids: Sequence[str], files: Sequence[str]) -> None:
    """folder/index.csv: subject_id,file for every subject, in input order."""
    with open(folder / INDEX_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["subject_id", "file"])
        writer.writerows(zip(subject_ids, files, strict=True))


def _writable_folder(folder: Path, named: Path) -> None:
    """Create `folder` if absent and check it can be written: a temporary file is opened in it and closed, one
    without a name where the file system has them (Linux's O_TMPFILE), so that a signal landing in the check leaves
    nothing behind (elsewhere a named one, removed at once). InputError naming `named` (the output the user gave)
    otherwise."""
    existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{named}: cannot write output here ({existing} is a file, not a folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"{named}: cannot write output here ({error.strerror or error})") from None


def output_folder_in_place(path: str | Path) -> Path:
    """A folder that outputs accumulate in (a resumable cv run, a synthesised dataset), checked before any work:
    not a file, created if absent, and writable. InputError names it otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file; the output must be a folder")
    _writable_folder(path, path)
    return path


def output_file(path: str | Path) -> Path:
    """An output file's path, checked before any work: not a folder, in a folder that can be created and
    written. InputError names the path otherwise."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; the output must be a file name here")
    _writable_folder(path.parent, path)
    return path


def lock_folder(folder: Path, what: str) -> int | None:
    """Take an exclusive OS lock (flock) on a folder and return its descriptor (close it to release): another
    process (or another call in this one) asking for the same folder is refused with an InputError naming it and
    `what`. The OS releases the lock on any exit, a crash included, so a lock is never stale. None where the OS
    has no flock (Windows): no lock there."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise InputError(f"{folder}: {what} is in use by another osteoscreen process; wait until it ends, or "
                         "choose another output") from None
    return descriptor


@contextmanager
def exclusive(folder: Path, what: str) -> Iterator[None]:
    """lock_folder for the block."""
    descriptor = lock_folder(folder, what)
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _written_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _foreign_files(out: Path) -> list[str]:
    """Files in an earlier output folder that the command did not write (not in its manifest)."""
    manifest = out / MANIFEST
    try:
        ours = set(manifest.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        ours = set()
    return [name for name in _written_files(out) if name not in ours]


def _hold_stop_signals(handlers: dict, stops: list) -> None:
    """Replace the handlers of STOP_SIGNALS by one that notes the signal in `stops`; `handlers` gets each
    replaced one as it goes. Python runs signal handlers in the main thread only (whichever thread the OS gave the
    signal to, so blocking it there would not hold it back): elsewhere nothing can interrupt, and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not None:  # None: a handler installed outside Python, left alone
            handlers[signum] = handler  # noted before it is replaced: an interruption between the two is undone
            signal.signal(signum, lambda number, frame: stops.append((number, frame)))


def _release_stop_signals(handlers: dict, stops: list) -> None:
    """Put back the handlers _hold_stop_signals replaced, then act on the first signal that came meanwhile as
    its own handler would have (raise Terminated or KeyboardInterrupt, or the default action)."""
    try:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    finally:  # again, all of them: a signal its restored handler acted on can cut the loop short
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        handlers.clear()
    if stops:
        (signum, frame), handler = stops[0], signal.getsignal(stops[0][0])
        stops.clear()
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)


@contextmanager
def output_folder(out: str | Path, replaces: str | None = None) -> Iterator[Path]:
    """Build an output folder whole or not at all, one writer at a time.

    Yields an empty sibling folder `OUT.partial` to write into, locked (`exclusive`) for the block; when the block
    succeeds it becomes `out` (with a manifest of what it wrote, MANIFEST, when `replaces` is given), when it fails
    it is removed and `out` is left as it was. Before the block runs, `out` must be absent, an empty folder or,
    when `replaces` names a file, an earlier output of the same command (a folder holding that file and only files
    its manifest lists), which is then replaced; anything else, a file at `out`, a location that cannot be written
    or an output another process is building is refused with an InputError naming `out`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; the output must be a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (replaces and (out / replaces).is_file()):
            earlier = f" (nor an earlier output of this command: it has no {replaces})" if replaces else ""
            raise InputError(f"{out}: already exists and is not empty{earlier}; choose another output or delete it")
        foreign = _foreign_files(out)
        if foreign:
            raise InputError(f"{out}: holds {len(foreign)} file(s) this command did not write "
                             f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}), which replacing it "
                             "would delete; move them, or choose another output")
    if out.is_dir():
        _writable_folder(out, out)  # it is replaced at the end: refuse a folder we cannot change before any work
    partial, previous = out.with_name(out.name + ".partial"), out.with_name(out.name + ".previous")
    created = not partial.exists()
    descriptor, held, handlers, stops = None, False, {}, []
    try:  # from the folder's creation on, an interruption (Ctrl-C, SIGTERM) at any point leaves nothing behind
        _writable_folder(partial, out)
        descriptor = lock_folder(partial, f"the output being built for {out}")
        held = True
        for stale in list(partial.iterdir()):  # a crashed run's leftovers (a live one holds the lock)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        yield partial
        if replaces:  # an output a later run may replace: say what this one wrote
            (partial / MANIFEST).write_text("\n".join(_written_files(partial)) + "\n", encoding="utf-8")
        _hold_stop_signals(handlers, stops)  # the finished output takes its place whole; a stop signal waits
        if out.exists():
            shutil.rmtree(previous, ignore_errors=True)
            out.rename(previous)
        partial.rename(out)
    finally:
        if held:
            shutil.rmtree(partial, ignore_errors=True)
            if previous.is_dir() and not out.exists():  # failed between the two renames: the earlier output back
                previous.rename(out)
            shutil.rmtree(previous, ignore_errors=True)
        elif created:  # made here but not locked yet: remove it only while empty (never another run's work)
            with contextlib.suppress(OSError):
                partial.rmdir()
        if descriptor is not None:
            os.close(descriptor)
        _release_stop_signals(handlers, stops)  # one that came meanwhile acts now, with the output in place
