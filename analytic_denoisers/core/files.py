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
import tempfile
from pathlib import Path

import numpy as np
import torch


def _read_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, process-wide


def atomic_write(path, write):
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: readers see the old file or the complete new one, never a partial write.

    Returns ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private: give it the usual permissions
        os.replace(tmp, path)
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
