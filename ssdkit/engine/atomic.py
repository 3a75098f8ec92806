"""Atomic file writes: a crash or kill mid-write never leaves a truncated file behind.

A write goes to a hidden temporary file in the target folder (``.<name>.<random>.tmp``), is flushed to
disk and renamed over the target. A process killed with SIGKILL (or a power cut) mid-write leaves at
most such a temporary file, never a half-written target; :func:`remove_stray_temps` deletes those.
A failed write (disk full, folder not writable) raises :class:`WriteError` naming the target file.
"""
import contextlib
import json
import os
import tempfile

from ssdkit.errors import UserError


class WriteError(UserError, OSError):
    """A file could not be written (disk full, quota, permissions); the message names the file.

    A :class:`~ssdkit.errors.UserError`: the scripts print it as one line. ``errno`` is the cause's
    (e.g. 28, ENOSPC) or None.
    """


def _temp_prefix(path):
    return "." + os.path.basename(path) + "."


def _fsync_folder(folder):
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def error_detail(err):
    """The informative line of an exception's message.

    MXNet's errors start with a ``Traceback (most recent call last):`` block of C++ frames and end
    with ``MXNetError: Check failed: ...: FileStream.Write incomplete``; that last line is returned,
    without its ``MXNetError:`` label. Other exceptions give their message's first line.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith("Traceback"):
        last = lines[-1]
        return last.split(": ", 1)[1] if last.startswith("MXNetError: ") else last
    return lines[0]


def write_failed(path, err):
    """The :class:`WriteError` for a failed write of ``path`` caused by ``err`` (any exception)."""
    detail = error_detail(err)
    error = WriteError("cannot write %s (%s): the disk is probably full or the folder not writable; "
                       "free space and run again (--resume continues from the last complete checkpoint)"
                       % (path, detail))
    error.errno = getattr(err, "errno", None)
    return error


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target folder; on success fsync it and rename it to ``path``.

    An ``OSError`` raised while writing, syncing or renaming becomes a :class:`WriteError` naming
    ``path``; the temporary file is removed in every case.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
    except OSError as err:
        raise write_failed(path, err) from err
    os.close(fd)
    try:
        try:
            yield tmp
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except WriteError:
            raise
        except OSError as err:
            raise write_failed(path, err) from err
        _fsync_folder(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stray_temps(prefix):
    """Delete the temporary files that killed writes of ``prefix-*`` files left behind.

    Parameters
    ----------
    prefix : str, e.g. ``output/ssd``: removes ``output/.ssd-*.tmp`` (temporaries of every
        ``output/ssd-*`` file), nothing else

    Returns
    -------
    list of str, the removed paths (sorted).
    """
    folder = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(folder):
        return []
    base = os.path.basename(prefix)
    start = "." + base + "-"
    removed = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".tmp") and name.startswith(start):
            path = os.path.join(folder, name)
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text):
    """Write ``text`` to ``path`` atomically, UTF-8 encoded."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
