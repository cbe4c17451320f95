"""Saving and loading fitted denoisers as HDF5 files, atomically and with metadata.

Layout of a file (schema 1):

* root attributes: ``format`` ("analytic_denoisers"), ``schema_version``, ``package_version``,
  ``class``, ``params`` (JSON of ``get_params()``), ``created`` (UTC, ISO 8601), and the data
  summary: ``image_shape``, ``n_samples``, ``value_range``, ``fingerprint``;
* group ``state``: one dataset per fitted tensor / array attribute (names ending in ``_``), and
  the attribute ``scalars`` (JSON of the other fitted attributes).

Writes go to a temporary file in the same folder, which is renamed over the target only when
complete, so an interrupted save never leaves a half-written file behind.
"""

import datetime
import inspect
import json
import math
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from .scales import json_default, json_object_hook

FORMAT = "analytic_denoisers"
SCHEMA_VERSION = 1


class FileFormatError(ValueError):
    """A file is not a readable analytic_denoisers file (corrupt, truncated, foreign, newer)."""


def _fitted_attributes(estimator):
    return {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}


def save(estimator, path):
    """Write a fitted estimator to ``path`` (HDF5), atomically. Returns the path.

    Parameters
    ----------
    estimator : a fitted denoiser of this package
    path : str or Path
    """
    from . import __version__

    estimator._check_fitted()
    path = Path(path)
    try:
        params = json.dumps(estimator.get_params(deep=False), default=json_default)  # schedules as dicts
    except TypeError as err:
        raise ValueError(f"cannot save {type(estimator).__name__}: its parameters are not JSON "
                         f"serialisable ({err})") from None
    arrays, scalars = {}, {}
    for name, value in _fitted_attributes(estimator).items():
        if isinstance(value, torch.Tensor):
            arrays[name] = ("tensor", value.detach().cpu().numpy())
        elif isinstance(value, np.ndarray):
            arrays[name] = ("ndarray", value)
        else:
            scalars[name] = value

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs.update(
                format=FORMAT, schema_version=SCHEMA_VERSION, package_version=__version__,
                params=params, created=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                image_shape=list(estimator.image_shape_), n_samples=estimator.n_samples_seen_,
                value_range=list(estimator.value_range_), fingerprint=estimator.fingerprint_,
            )
            f.attrs["class"] = type(estimator).__name__
            state = f.create_group("state")
            state.attrs["scalars"] = json.dumps(scalars)
            for name, (kind, array) in arrays.items():
                big = array.nbytes > 1 << 20
                ds = state.create_dataset(name, data=array, compression="gzip" if big else None,
                                          shuffle=big)
                ds.attrs["kind"] = kind

    return atomic_write(path, write)


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


def _finite_or_none(obj):
    """NaN and ±inf (undefined numbers) as JSON null, through dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_json(path, obj):
    """Write ``obj`` as indented, strict JSON (NaN and ±inf as null), atomically; returns the Path."""
    text = json.dumps(_finite_or_none(obj), indent=1, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _open(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; create it with est.save(path) or "
                                "`analytic-denoisers fit ... --out PATH`")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise FileFormatError(f"{path}: not a readable HDF5 file, it may be truncated or corrupt "
                              f"({err}); re-create it with est.save or `analytic-denoisers fit`") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise FileFormatError(f"{path}: an HDF5 file, but not one written by analytic_denoisers")
    raw = f.attrs.get("schema_version", -1)
    try:
        version = int(raw)
    except (TypeError, ValueError):
        f.close()
        raise FileFormatError(f"{path}: unreadable schema_version {raw!r}") from None
    if version > SCHEMA_VERSION:
        f.close()
        raise FileFormatError(f"{path}: written with schema version {version} by a newer "
                              f"analytic_denoisers; this version reads up to {SCHEMA_VERSION}, upgrade it")
    return f


def info(path):
    """Metadata of a saved denoiser, without loading its arrays.

    Returns
    -------
    dict with class, params, image_shape, n_samples, value_range, fingerprint, schema and package
    versions, creation time, and the shape and dtype of each stored array.
    """
    with _open(path) as f:
        try:
            meta = {k: (v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v)
                    for k, v in f.attrs.items()}
            meta["params"] = json.loads(meta["params"])
            meta["arrays"] = {k: f"{v.dtype}{list(v.shape)}" for k, v in f["state"].items()}
        except (KeyError, OSError, ValueError) as err:
            raise FileFormatError(f"{path}: incomplete or corrupt metadata ({err})") from None
    return meta


def _restore_tuples(cls, params):
    """JSON turns tuples into lists: give back tuples where the constructor's default is one."""
    defaults = inspect.signature(cls).parameters
    return {k: tuple(v) if isinstance(v, list) and k in defaults and isinstance(defaults[k].default, tuple)
            else v for k, v in params.items()}


def load(path):
    """Load a denoiser saved with ``est.save(path)``.

    Raises
    ------
    FileNotFoundError if the file does not exist; FileFormatError (a ValueError) if it is not a
    complete analytic_denoisers file or was written by a newer schema.
    """
    import analytic_denoisers

    with _open(path) as f:
        name = f.attrs.get("class")
        cls = getattr(analytic_denoisers, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, analytic_denoisers.DenoiserMixin)):
            raise FileFormatError(f"{path}: unknown denoiser class {name!r}")
        try:
            estimator = cls(**_restore_tuples(cls, json.loads(f.attrs["params"], object_hook=json_object_hook)))
            state = json.loads(f["state"].attrs["scalars"])
            for key, ds in f["state"].items():
                array = ds[()]
                state[key] = torch.from_numpy(array) if ds.attrs["kind"] == "tensor" else array
            missing = sorted(set(cls._fitted_state) - set(state))
            if missing:
                raise KeyError(f"missing fitted state {missing}")
            state["image_shape_"] = tuple(state["image_shape_"])
            state["value_range_"] = tuple(state["value_range_"])
        except (KeyError, OSError, ValueError, TypeError) as err:
            raise FileFormatError(f"{path}: truncated or corrupt contents ({err}); "
                                  "re-create it with est.save or `analytic-denoisers fit`") from None
    vars(estimator).update(state)
    estimator._cache = {}
    return estimator
