"""Progress bars for long loops (training epochs, evaluation).

On a terminal the bar redraws a few times per second; when stderr is a file or a pipe (CI logs,
``> train.log``) it prints a line at most every 30 s instead of flooding the log with redraws.
"""
import sys


def progress_bar(total=None, desc=None, enabled=True):
    """A ``tqdm`` bar counting batches, or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm import tqdm

    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=False,
                mininterval=0.1 if interactive else 30.0)
