"""The HDF5 file format of a fitted estimator: written atomically, with metadata.

Layout of a file (schema 1):

* root attributes: ``format`` ("analytic_denoisers"), ``schema_version``, ``package_version``,
  ``class``, ``params`` (JSON of ``get_params()``, less the class's ``_not_saved`` ones), ``created`` (UTC, ISO 8601), and the data
  summary: ``image_shape``, ``n_samples``, ``value_range``, ``fingerprint``;
* group ``state``: one dataset per fitted tensor / array attribute (names ending in ``_``), and
  the attribute ``scalars`` (JSON of the other fitted attributes).

This module writes and reads that layout; :func:`analytic_denoisers.registry.load` turns what
:func:`read` returns back into an estimator, finding its class in the registry.
"""

import datetime
import json
import math
from pathlib import Path

import h5py
import numpy as np
import torch

from .distributed import as_shard
from .files import atomic_write, dumps, to_jsonable
from .version import __version__

FORMAT = "analytic_denoisers"
SCHEMA_VERSION = 1
REBUILD = "re-create it with est.save or `analytic-denoisers fit`"


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
    estimator._check_fitted()
    path = Path(path)
    try:
        kept = {k: v for k, v in estimator.get_params(deep=False).items()
                if k not in getattr(estimator, "_not_saved", ())}  # e.g. a network's weights stay with the user
        params = dumps(kept)  # schedules as their dicts
    except ValueError as err:
        raise ValueError(f"cannot save {type(estimator).__name__}: its parameters are {err} (schedules must "
                         "be a number or an analytic_denoisers.scales.Table to be saved)") from None
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
            state.attrs["scalars"] = dumps(scalars)
            for name, (kind, array) in arrays.items():
                big = array.nbytes > 1 << 20
                ds = state.create_dataset(name, data=array, compression="gzip" if big else None,
                                          shuffle=big)
                ds.attrs["kind"] = kind

    return atomic_write(path, write)


def _open(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; create it with est.save(path) or "
                                "`analytic-denoisers fit ... --out PATH`")
    if path.is_dir():
        raise FileFormatError(f"{path}: a folder, not a file saved by this package; a diffusers pipeline "
                              "folder is read by NetworkDenoiser.from_diffusers(path) (and by `bench --reference`)")
    if not h5py.is_hdf5(path):
        raise FileFormatError(
            f"{path}: not an HDF5 file, so not a denoiser saved by this package (est.save writes HDF5)"
            + ("; it may be truncated or corrupt" if path.suffix in (".h5", ".hdf5") else
               "; a network's own weights (.pt, .safetensors, ...) are used by wrapping the loaded network "
               "in NetworkDenoiser") + f"; {REBUILD}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise FileFormatError(f"{path}: not a readable HDF5 file, it may be truncated or corrupt "
                              f"({err}); {REBUILD}") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise FileFormatError(f"{path}: an HDF5 file, but not one written by analytic_denoisers")
    raw = f.attrs.get("schema_version")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        f.close()
        raise FileFormatError(f"{path}: {'no' if raw is None else 'an unreadable'} schema_version"
                              f"{'' if raw is None else ' ' + repr(raw)}; {REBUILD}") from None
    if version < 1:
        f.close()
        raise FileFormatError(f"{path}: schema_version {version} does not exist; {REBUILD}")
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
            meta = to_jsonable(dict(f.attrs))
            meta["params"] = json.loads(meta["params"])
            meta["arrays"] = {k: f"{v.dtype}{list(v.shape)}" for k, v in f["state"].items()}
        except (KeyError, OSError, ValueError) as err:
            raise FileFormatError(f"{path}: incomplete or corrupt metadata ({err})") from None
    return meta


def _fully_stored(ds):
    """Whether every byte a dataset declares was written: a contiguous dataset has its storage,
    a chunked (compressed) one every chunk. HDF5 would fill the rest in, so a small file could
    otherwise make a reader allocate whatever shape it declares."""
    if ds.chunks is None:
        return ds.id.get_storage_size() >= ds.nbytes
    expected = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks))
    return ds.id.get_num_chunks() >= expected


def _check_datasets(path, f, fitted_state):
    """Everything about the stored arrays that can be checked before reading them."""
    state = f["state"]
    unknown = sorted((set(state) | set(json.loads(state.attrs["scalars"]))) - set(fitted_state or ()))
    if fitted_state is not None and unknown:
        raise FileFormatError(f"{path}: unknown fitted state {unknown}; {REBUILD}")
    meta = {k: f.attrs[k] for k in ("image_shape", "n_samples")}
    image_shape = tuple(int(v) for v in np.atleast_1d(meta["image_shape"]))
    n_samples = int(meta["n_samples"])
    if len(image_shape) != 3 or min(image_shape) < 1 or n_samples < 1:
        raise FileFormatError(f"{path}: image_shape {image_shape} and n_samples {n_samples} are not an image set")
    for key, ds in state.items():
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "biuf" or ds.attrs.get("kind") not in ("tensor", "ndarray"):
            raise FileFormatError(f"{path}: state/{key} is not a numeric array of this package; {REBUILD}")
        if not _fully_stored(ds):
            raise FileFormatError(f"{path}: state/{key} declares {tuple(ds.shape)} ({ds.nbytes} bytes) but stores "
                                  f"{ds.id.get_storage_size()} bytes of it: a truncated or forged file, not read; "
                                  f"{REBUILD}")
    if "data_" in state and tuple(state["data_"].shape) != (n_samples, *image_shape):
        raise FileFormatError(f"{path}: data_ has shape {tuple(state['data_'].shape)}, but the file describes "
                              f"{n_samples} images of shape {image_shape}; {REBUILD}")


def read_class(path):
    """The class name stored in ``path`` (after the checks of the file's format and schema)."""
    with _open(path) as f:
        if "class" not in f.attrs:
            raise FileFormatError(f"{path}: truncated or corrupt contents (no class); {REBUILD}")
        return str(f.attrs["class"])


ROW_STATE = ("data_", "labels_")  # fitted arrays with one row per training image (read by shard)


def read(path, object_hook=None, fitted_state=None, shard=None):
    """The class name, parameters and fitted state stored in ``path``, checked before use.

    Parameters
    ----------
    path : str or Path
    object_hook : passed to ``json.loads`` for the parameters (rebuilds schedules)
    fitted_state : names of the fitted attributes the file may hold, optional (any others are an
        error)
    shard : ``(rank, world)`` or ``slice(start, stop)``, optional: read only these rows of the
        training images and labels (:data:`ROW_STATE`; see
        :func:`~analytic_denoisers.core.distributed.as_shard`)

    Returns
    -------
    (str, dict, dict): the class name, ``get_params()`` as saved, and the fitted attributes
    (tensors, arrays and plain values; ``image_shape_`` and ``value_range_`` as tuples).

    Raises
    ------
    FileNotFoundError if the file does not exist; FileFormatError (a ValueError) if it is not a
    complete analytic_denoisers file, was written by a newer schema, or its contents contradict
    its metadata: unknown state, arrays that are not numeric or store less than they declare
    (checked before reading them), training images of another shape or count than the file
    says, NaN or Inf values.
    """
    with _open(path) as f:
        try:
            total = int(f.attrs["n_samples"])
        except (KeyError, TypeError, ValueError):
            raise FileFormatError(f"{path}: truncated or corrupt contents (no n_samples); {REBUILD}") from None
        rows = None if shard is None else as_shard(shard, total)  # a bad shard is the caller's ValueError
        try:
            name = str(f.attrs["class"])
            params = json.loads(f.attrs["params"], object_hook=object_hook)
            if not isinstance(params, dict):
                raise ValueError(f"params must be a JSON object, got {type(params).__name__}")
            _check_datasets(path, f, fitted_state)
            state = json.loads(f["state"].attrs["scalars"])
            for key, ds in f["state"].items():
                array = ds[rows.start:rows.stop] if rows is not None and key in ROW_STATE else ds[()]
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise FileFormatError(f"{path}: state/{key} holds NaN or Inf values; {REBUILD}")
                state[key] = torch.from_numpy(array) if ds.attrs["kind"] == "tensor" else array
            state["image_shape_"] = tuple(state["image_shape_"])
            state["value_range_"] = tuple(state["value_range_"])
        except FileFormatError:
            raise
        except (KeyError, OSError, ValueError, TypeError, MemoryError) as err:
            raise FileFormatError(f"{path}: truncated or corrupt contents ({type(err).__name__}: {err}); "
                                  f"{REBUILD}") from None
    return name, params, state
