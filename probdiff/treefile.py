"""Nested state in one ``.npz`` file that cannot carry code (checkpoints, RNG states).

A tree of dicts, lists and tuples whose leaves are arrays (NumPy, torch, JAX), numbers,
strings, booleans or None is written as the npz members ``a0, a1, ...`` (one per array) and a
JSON manifest describing the structure. Reading uses ``np.load(allow_pickle=False)`` and
``json``: nothing in the file is imported or unpickled, so a received run folder cannot run
code through its checkpoint. Torch tensors come back as CPU tensors of the same dtype; dict
keys may be strings or integers (a torch optimiser's state is keyed by index); tuples stay
tuples (``random.setstate`` needs them).

>>> import numpy as np
>>> tree = {"step": 3, "rng": ("MT", np.arange(3, dtype=np.uint32)), "x": [1.5, None]}
>>> back = loads(dumps(tree))
>>> back["step"], back["rng"][0], back["rng"][1].dtype.name, back["x"]
(3, 'MT', 'uint32', [1.5, None])
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from probdiff.errors import ProbdiffError

_MANIFEST = "manifest"
_FORMAT = "probdiff-tree-1"


def dumps(tree: Any) -> bytes:
    """The ``.npz`` bytes of ``tree``; a TypeError names any leaf that is not plain data."""
    arrays: dict[str, np.ndarray] = {}
    manifest = {"format": _FORMAT, "tree": _encode(tree, arrays, "state")}
    arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs read a name as allow_pickle
    return buf.getvalue()


def loads(data: bytes, where: str = "state") -> Any:
    """Inverse of :func:`dumps`; a :class:`ProbdiffError` naming ``where`` if ``data`` is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            members = {k: archive[k] for k in archive.files}
        manifest = json.loads(members.pop(_MANIFEST).tobytes().decode())
        if manifest.get("format") != _FORMAT:
            raise ValueError(f"unknown format {manifest.get('format')!r}")
        return _decode(manifest["tree"], members)
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
        EOFError,
    ) as e:
        raise ProbdiffError(
            f"{where} is not a readable probdiff state file "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def _encode(obj: Any, arrays: dict, path: str) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{path}: dict key {k!r} is neither a string nor an integer")
            items.append([k, _encode(v, arrays, f"{path}.{k}")])
        return {"d": items}
    if isinstance(obj, (list, tuple)):
        seq = [_encode(v, arrays, f"{path}[{i}]") for i, v in enumerate(obj)]
        return {"t": seq} if isinstance(obj, tuple) else {"l": seq}
    kind, value = _as_array(obj)
    if value is None:
        raise TypeError(f"{path}: cannot store a {type(obj).__name__} (plain data only)")
    name = f"a{len(arrays)}"
    arrays[name] = value
    return {kind: name}


def _as_array(obj: Any) -> tuple[str, np.ndarray | None]:
    """("n", array) for NumPy/JAX arrays and NumPy scalars, ("torch", array) for tensors."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return "n", np.asarray(obj)
    module = type(obj).__module__
    if module.startswith("torch"):
        return "torch", obj.detach().cpu().numpy()
    if module.startswith("jax") or module.startswith("jaxlib"):
        return "n", np.asarray(obj)
    return "", None


def _decode(node: Any, members: dict) -> Any:
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"malformed manifest entry {str(node)[:60]!r}")
    ((kind, value),) = node.items()
    if kind == "d":
        return {k: _decode(v, members) for k, v in value}
    if kind == "l":
        return [_decode(v, members) for v in value]
    if kind == "t":
        return tuple(_decode(v, members) for v in value)
    if kind == "n":
        return members[value]
    if kind == "torch":
        import torch

        return torch.from_numpy(np.array(members[value]))
    raise ValueError(f"unknown manifest entry kind {kind!r}")
