"""Network twins: a Flax network's parameters under its torch twin's names.

The project's twin networks share one layout: a Flax ``Dense_i`` is the torch
``nn.Sequential`` entry ``2i`` (activations take the odd entries); named layers (``conv0``,
``dense``) keep their names. A Flax kernel is transposed to a torch weight: dense (in, out)
-> (out, in), convolution (kh, kw, in, out) -> (out, in, kh, kw). A NumPyro fit's parameters
can then be loaded into the Pyro program (for sampling and figures, which run in torch).

>>> import numpy as np
>>> out = flax_to_torch({"enc$params.Dense_1.kernel": np.zeros((3, 2))}, {"enc": "enc$$$net"})
>>> {k: v.shape for k, v in out.items()}
{'enc$$$net.2.weight': (2, 3)}
"""

from __future__ import annotations

import numpy as np


def flax_to_torch(
    params: dict[str, np.ndarray], modules: dict[str, str], renames: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """``{module}$params.<layer>.<leaf>`` -> ``{modules[module]}.<layer>.<weight|bias>`` for
    each Flax module named in ``modules`` (the torch prefix of its twin); ``renames`` maps
    other names one to one. A dictionary without Flax parameters comes back unchanged."""
    flax = tuple(f"{m}$params." for m in modules)
    if not any(k.startswith(flax) for k in params):
        return params
    out = {}
    for name, value in params.items():
        value = np.asarray(value)
        if renames and name in renames:
            out[renames[name]] = value
            continue
        module, layer, leaf = name.split(".")
        if layer.startswith("Dense_"):
            layer = str(2 * int(layer.split("_")[1]))
        if leaf == "kernel":
            value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
        out[
            f"{modules[module.split('$')[0]]}.{layer}.{'weight' if leaf == 'kernel' else 'bias'}"
        ] = value
    return out
