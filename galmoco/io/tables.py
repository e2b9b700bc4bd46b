"""Tables on disk: the catalogues, embeddings and analysis products galmoco reads and writes.

The format follows the file's suffix: ``.parquet`` (vector columns as fixed-size lists), ``.fits``
(vector columns as ``(N, D)`` array columns), ``.h5``/``.hdf5`` (an astropy table at path
``embeddings``) or ``.csv`` (scalar columns only). Writes are atomic (:mod:`galmoco.files`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from galmoco.errors import GalmocoError
from galmoco.files import atomic_output

__all__ = ["TABLE_SUFFIXES", "VECTOR_TABLE_SUFFIXES", "read_table", "table_format", "write_table"]

#: file suffix -> astropy/pyarrow format
TABLE_SUFFIXES = {".parquet": "parquet", ".fits": "fits", ".h5": "hdf5", ".hdf5": "hdf5", ".csv": "csv"}
#: the suffixes whose formats hold vector (2-D) columns
VECTOR_TABLE_SUFFIXES = tuple(s for s in TABLE_SUFFIXES if s != ".csv")
_HDF5_PATH = "embeddings"


def table_format(path: str | Path, vectors: bool = False) -> str:
    """The format of a table file from its suffix, checked before any work is done.

    Args:
        path: the table's file name.
        vectors: the table will hold vector columns (CSV cannot).

    Raises:
        GalmocoError: naming the file, for an unknown suffix or CSV with vectors.
    """
    path = Path(path)
    suffixes = VECTOR_TABLE_SUFFIXES if vectors else tuple(TABLE_SUFFIXES)
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None or path.suffix.lower() not in suffixes:
        what = "a table with vector columns" if vectors else "a table"
        raise GalmocoError(f"{path}: {path.suffix or 'no suffix'} cannot hold {what}; "
                           f"use one of {', '.join(suffixes)}")
    return fmt


def _vector_arrow(values: np.ndarray):
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def write_table(table: Table, path: str | Path) -> Path:
    """Write a table atomically (:func:`galmoco.files.atomic_output`).

    Args:
        table: astropy table; 2-D columns become fixed-size lists in parquet, array columns in FITS/HDF5.
        path: output, format by suffix (see :data:`TABLE_SUFFIXES`).

    Returns:
        The path written.

    Raises:
        GalmocoError: for an unknown suffix, or vector columns in a CSV file.
    """
    path = Path(path)
    fmt = table_format(path, vectors=any(table[name].ndim > 1 for name in table.colnames))
    with atomic_output(path) as tmp:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            def native(name: str) -> np.ndarray:  # arrow refuses byte-swapped (e.g. FITS) arrays
                data = np.asarray(table[name])
                return data.astype(data.dtype.newbyteorder("=")) if data.dtype.byteorder == ">" else data

            cols = {name: _vector_arrow(native(name)) if table[name].ndim == 2 else pa.array(native(name))
                    for name in table.colnames}
            meta = {str(k): str(v) for k, v in table.meta.items()}
            pq.write_table(pa.table(cols, metadata=meta), tmp)
        elif fmt == "hdf5":
            tmp.unlink()  # h5py refuses to append a table to an empty non-HDF5 file
            table.write(tmp, format="hdf5", path=_HDF5_PATH, serialize_meta=True)
        else:
            table.write(tmp, format=fmt, overwrite=True)
    return path


def read_table(path: str | Path) -> Table:
    """Read a table written by :func:`write_table` (parquet, FITS, HDF5 or CSV).

    Returns:
        astropy Table; vector columns as ``(N, D)`` float32 arrays, string columns as ``str``.
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise GalmocoError(f"{path}: no such file")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        at = pq.read_table(path)
        out = Table()
        for name, col in zip(at.column_names, at.columns, strict=True):
            col = col.combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                out[name] = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                out[name] = np.array(col.to_pylist(), dtype=str)  # not an object array: FITS-writable
            else:
                out[name] = col.to_numpy(zero_copy_only=False)
        out.meta.update({k.decode(): v.decode() for k, v in (at.schema.metadata or {}).items()})
        return out
    table = Table.read(path, format=fmt, path=_HDF5_PATH) if fmt == "hdf5" else Table.read(path, format=fmt)
    for name in table.colnames:  # FITS is big-endian and may hand strings back as bytes
        col = np.asarray(table[name])
        if col.dtype.kind == "S":
            table[name] = np.char.decode(col, "utf-8")
        elif not col.dtype.isnative:
            table[name] = col.astype(col.dtype.newbyteorder("="))
    return table


