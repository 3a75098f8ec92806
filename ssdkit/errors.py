"""Errors that are the user's to fix: bad config, bad data, missing files, unknown class names,
parameters that do not fit the graph.

The scripts (:func:`ssdkit.cli.run_script`) print a :class:`UserError` as one line
``error: <message>`` on stderr and exit with status 2; any other exception is a defect of ssdkit and
keeps its traceback. The subclasses also derive from the built-in type a Python caller would expect
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` around a library call still works.

Validation sites raise these types directly. Readers and loaders elsewhere in the library raise plain
``ValueError`` / ``FileNotFoundError`` with messages that name the file and the fix; the api functions
call them inside :func:`user_input`, which re-raises those two types as user errors — only around
code whose job is to read and check the user's input, so a ``ValueError`` of a bug elsewhere still
shows its traceback.
"""
import contextlib


class UserError(Exception):
    """Base class: the message says what is wrong with the input and how to fix it."""


class InputError(UserError, ValueError):
    """A config value, data file, class name or model file holds something ssdkit cannot use."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or that a prefix implies) does not exist."""


class ParameterMismatchError(InputError):
    """Model parameters do not fit the graph their meta file describes (names or shapes).

    Attributes
    ----------
    problems : list of str, one line per parameter (name, expected vs found shape)
    """

    def __init__(self, message, problems=()):
        super().__init__(message)
        self.problems = list(problems)


@contextlib.contextmanager
def user_input():
    """Re-raise ``ValueError`` as :class:`InputError` and ``FileNotFoundError`` as
    :class:`MissingFileError` (same message, the original chained as ``__cause__``).

    Use it only around code that reads and validates what the user gave (config files, datasets,
    parameter files): inside it, those two exception types mean bad input, not a defect.
    """
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError as err:
        raise MissingFileError(_message(err)) from err
    except ValueError as err:
        raise InputError(_message(err)) from err


def _message(err):
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return "%s: %s" % (err.filename, err.strerror)
    return str(err)
