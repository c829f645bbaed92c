"""Minimal safetensors reader/writer (no dependency on the `safetensors` package).

Format (https://huggingface.co/docs/safetensors): 8-byte little-endian u64 N, then N bytes of UTF-8
JSON {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the byte buffer; offsets are relative to the start of the buffer, data is little-endian and
row-major, and the buffer is fully covered by the tensors (no holes, no overlap).

    tensors, metadata = st.load(path)          # {name: numpy.ndarray}, {str: str}
    st.save(path, {name: ndarray|torch.Tensor}, metadata=None)
"""

import json
import struct

import numpy as np

# dtype string -> little-endian numpy dtype.  BF16 is read as uint16 and widened to float32.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NP_TO_ST = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}

_MAX_HEADER = 100 * 1024 * 1024


class STError(Exception):
    """The file is not a valid safetensors file."""


def load(path):
    """Returns ({name: numpy array (own copy)}, metadata dict). Raises STError / OSError."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise STError(f"{path}: file too short ({len(blob)} bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER or 8 + n > len(blob):
        raise STError(f"{path}: bad header length {n} (file {len(blob)} bytes)")
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise STError(f"{path}: header is not JSON: {e}")
    if not isinstance(header, dict):
        raise STError(f"{path}: header is not a JSON object")
    data = memoryview(blob)[8 + n :]
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise STError(f"{path}: __metadata__ must map strings to strings")
    tensors = {}
    spans = []
    for name, info in header.items():
        try:
            dt = info["dtype"]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise STError(f"{path}: bad entry for {name!r}: {e}")
        if dt not in _DTYPES:
            raise STError(f"{path}: {name}: unsupported dtype {dt}")
        npdt = _DTYPES[dt]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if any(s < 0 for s in shape) or not (0 <= begin <= end <= len(data)):
            raise STError(f"{path}: {name}: bad shape/offsets {shape} {begin}..{end}")
        if end - begin != count * npdt.itemsize:
            raise STError(
                f"{path}: {name}: {end - begin} bytes for {dt}{shape} (need {count * npdt.itemsize})"
            )
        arr = np.frombuffer(data[begin:end], dtype=npdt, count=count).reshape(tuple(shape)).copy()
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = arr.astype(npdt.newbyteorder("="), copy=False)
        tensors[name] = arr
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise STError(f"{path}: {name}: hole or overlap in the data buffer at byte {pos}")
        pos = end
    if pos != len(data):
        raise STError(f"{path}: {len(data) - pos} trailing bytes after the last tensor")
    return tensors, metadata


def _to_numpy(t):
    if hasattr(t, "detach"):  # torch.Tensor
        t = t.detach().cpu().contiguous().numpy()
    return np.asarray(t)  # not ascontiguousarray: it turns 0-d scalars into shape [1]


def save(path, tensors, metadata=None):
    """Writes {name: array} (numpy or torch) with optional {str: str} metadata.

    Tensors are laid out by descending element size, then by name (so every tensor is aligned to its
    element size), with no holes; the header is space-padded to a multiple of 8 bytes."""
    arrays = {name: _to_numpy(t) for name, t in tensors.items()}
    for name, a in arrays.items():
        if a.dtype not in _NP_TO_ST:
            raise STError(f"{name}: cannot write dtype {a.dtype}")
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    chunks = []
    for name in order:
        a = arrays[name]
        st_dt = _NP_TO_ST[a.dtype]
        raw = a.astype(_DTYPES[st_dt], copy=False).tobytes(order="C")
        header[name] = {"dtype": st_dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for raw in chunks:
            f.write(raw)
