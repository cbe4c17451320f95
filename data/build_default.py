"""Build the shipped default dataset, ``data/fashion-mnist-default/``, from the Debian package.

Takes the first 10,000 training and the first 1,000 test images and labels of Fashion-MNIST,
in their original order, from ``dataset-fashion-mnist`` (``sudo apt-get install
dataset-fashion-mnist``), writes them as IDX files gzip-compressed with a zero timestamp, so the
output does not depend on when it was built, and records their sha256 in ``SHA256SUMS``.

    python data/build_default.py
"""
import argparse
import gzip
import hashlib
import struct
import sys
from pathlib import Path

SOURCE = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parent / "fashion-mnist-default"
COUNTS = {"train": 10_000, "t10k": 1_000}  # file prefix -> number of leading records kept
KINDS = ("images-idx3-ubyte", "labels-idx1-ubyte")


def head_idx(data, n):
    """The IDX file ``data`` (uint8 records) cut to its first ``n`` records, bytes unchanged."""
    if data[:3] != b"\0\0\x08":
        raise ValueError("not a uint8 IDX file")
    ndim, offset = data[3], 4 + 4 * data[3]
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    record = (len(data) - offset) // shape[0]  # bytes per record
    if shape[0] < n or record * shape[0] != len(data) - offset:
        raise ValueError(f"IDX file of shape {shape} is truncated or has fewer than {n} records")
    header = struct.pack(f">4B{ndim}I", 0, 0, 0x08, ndim, n, *shape[1:])
    return header + data[offset:offset + n * record]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="folder of the four .gz files")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    args = parser.parse_args(argv)

    names = [f"{prefix}-{kind}.gz" for prefix in COUNTS for kind in KINDS]
    missing = [str(args.source / name) for name in names if not (args.source / name).is_file()]
    if missing:
        sys.exit("Fashion-MNIST source files are missing:\n  " + "\n  ".join(missing)
                 + "\nInstall them with `sudo apt-get install dataset-fashion-mnist`.")
    args.out.mkdir(parents=True, exist_ok=True)
    sums = []
    for name in names:
        n = COUNTS[name.split("-")[0]]
        payload = gzip.compress(head_idx(gzip.decompress((args.source / name).read_bytes()), n),
                                compresslevel=9, mtime=0)
        (args.out / name).write_bytes(payload)
        sums.append(f"{hashlib.sha256(payload).hexdigest()}  {name}\n")
        print(f"wrote {args.out / name} ({n} records, {len(payload)} bytes)")
    (args.out / "SHA256SUMS").write_text("".join(sums))
    return 0


if __name__ == "__main__":
    sys.exit(main())
