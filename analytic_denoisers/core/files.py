"""Atomic file writes and the one conversion of Python, numpy and torch values to JSON.

:func:`atomic_write` writes to a temporary file beside the target and renames it over the target
only when complete, so a reader (or an interrupted run) sees the old file or the new one, never a
partial write. :func:`to_jsonable` is the package's only JSON adapter: estimator parameters,
results files and checkpoints all go through it. :func:`shown_path` is how result files name a
path.
"""

import json
import math
import os
import re
import socket
import stat
import tempfile
from pathlib import Path

import numpy as np
import torch


def _read_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, process-wide


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or no such pid at all
        return True
    return True


# this machine, in temporary file names: a process of another machine (a shared file system)
# is never taken for a dead one of this machine
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temporary_prefix(path):
    return f".{path.name}.{_HOST}.{os.getpid()}."


def _remove_stale_temporaries(path):
    """Delete the temporary files of earlier writes of ``path`` on this machine whose process is
    gone (a save killed between writing and renaming); a write in progress keeps its file."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_HOST)}\.(\d+)\.[A-Za-z0-9_]{{8}}\.tmp")
    for tmp in path.parent.iterdir():
        found = pattern.fullmatch(tmp.name)
        if found and not _alive(int(found.group(1))):
            tmp.unlink(missing_ok=True)


def atomic_write(path, write):
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: readers see the old file or the complete new one, never a partial write.

    A symlink at ``path`` is kept and its target written; an existing file keeps its permission
    bits (a new one gets the umask's); temporary files of writes whose process was killed are
    removed.

    Returns ``path`` as a Path.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes the file private
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def to_jsonable(obj):
    """``obj`` as plain JSON values: the package's one JSON conversion.

    Dicts, lists and tuples are converted recursively (tuples become lists); numpy scalars and
    arrays and torch tensors become numbers and lists; NaN and ±inf (undefined numbers) become
    None (JSON null); an object with a ``to_dict()`` method (a schedule such as
    :class:`~analytic_denoisers.scales.table.Table`) becomes that dict. Anything else is
    returned as it is, so that ``json.dumps`` still refuses what JSON cannot hold (a lambda).
    """
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        obj = obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    return obj


def dumps(obj, **kwargs):
    """Strict JSON text of ``to_jsonable(obj)`` (``allow_nan=False``); ValueError if it cannot be
    written as JSON, naming the offending type."""
    try:
        return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)
    except TypeError as err:
        raise ValueError(f"not JSON serialisable: {err}") from None


def write_json(path, obj):
    """Write ``obj`` as indented, strict JSON (NaN and ±inf as null), atomically; returns the Path."""
    text = dumps(obj, indent=1) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def shown_path(path):
    """A path relative to the working directory when it lies below it (reports stay portable)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
