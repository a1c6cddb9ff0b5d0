"""What the score-based families (``ncsn``, ``sde``) share: data units, networks, parameters.

Continuous data are modelled as they are; integer images are scaled to [-1, 1]
(docs/equations.md (2.18); their
likelihoods are dequantised masses, :mod:`probdiff.diffusion.ode_likelihood`). The score network is
the DDPM's time-conditioned MLP (vectors) or U-Net (images); the family says what "time" is
(a noise level index, or t in [0, 1]). Training is the score-matching program's SVI on Pyro;
``elbo`` in the traces is minus the loss per datum.
"""

from __future__ import annotations

import numpy as np

from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import Family, parse_widths
from probdiff.program import Program
from probdiff.scaling import DataScaling

EVAL_REPEATS = 8  # noise draws per row for the evaluated loss
TRAIN_EVAL_ROWS = 500  # the training loss is evaluated on a random subset of this many rows
FACTOR = "score_matching"  # the models' loss site


class ScoreFamily(Family):
    backends = ("pyro",)
    default_lr = 2e-3
    default_steps = 3000
    module_name = ""  # the pyro.module name of the score network

    @classmethod
    def add_network_arguments(cls, g) -> None:
        g.add_argument(
            "--net",
            choices=("auto", "mlp", "unet"),
            default="auto",
            help="score network: auto = unet for images, mlp for vectors",
        )
        g.add_argument("--hidden", default="128,128", help="widths of the MLP")
        g.add_argument("--channels", default="32,64", help="U-Net widths per level")

    def __init__(self, options: dict, data: Dataset):
        super().__init__(options, data)
        o = self.options
        self.hidden = parse_widths(o["hidden"])
        self.net = o["net"] if o["net"] != "auto" else ("unet" if data.kind == "image" else "mlp")
        if self.net == "unet":
            from probdiff.models.ddpm.networks import unet_widths

            self.channels = unet_widths(data.event_shape, o["channels"])
        self.scaling = DataScaling.of(data, "gaussian", target=(-1.0, 1.0))
        self.data_log_jacobian = self.scaling.log_jacobian
        self.dim = data.dim

    def validate_request(self, inference, backend, settings, n_train, dtype) -> None:
        if backend != "pyro":
            raise ProbdiffError(
                f"model {self.name} runs on Pyro only (the score-matching "
                "program); use --backend pyro"
            )

    def prepare(self, data: Dataset) -> np.ndarray:
        return self.scaling.forward(data)

    @property
    def bin_width(self) -> float | None:
        """Spacing of integer levels in model units (None for continuous data): the w of
        docs/equations.md (4.15)."""
        if self.scaling.identity or not self.scaling.levels:
            return None
        t0, t1 = self.scaling.target
        return (t1 - t0) / (self.scaling.levels - 1)

    def network(self, T: int | float):
        from probdiff.models.ddpm.networks import TimeMLP, UNet

        if self.net == "unet":
            return UNet(self.data.event_shape, self.channels, T)
        return TimeMLP(self.dim, self.hidden, T)

    def load_module(self, module, params: dict[str, np.ndarray]):
        """``module`` with the fitted weights of ``params`` (float32, eval mode)."""
        import torch

        prefix = self.module_name + "$$$"
        state = {
            k[len(prefix) :]: torch.as_tensor(np.asarray(v), dtype=torch.float32)
            for k, v in params.items()
            if k.startswith(prefix)
        }
        buffers = {k: v for k, v in module.state_dict().items() if k not in state}
        module.load_state_dict({**buffers, **state})
        return module.eval()

    def posterior(self, backend, program, params, x, num_samples, seed):
        """The guide's latents are noised copies of the data: nothing to summarise."""
        return {}

    def loss_program(self, module) -> Program:
        """The training program over every noise level / time, around a given score module."""
        raise NotImplementedError

    def per_datum_loss(
        self, params, x: np.ndarray, seed: int, repeats: int = EVAL_REPEATS
    ) -> np.ndarray:
        """The loss of each row of ``x``, averaged over ``repeats`` noise draws: the model's
        ``score_matching`` factor (with its plate scales) replayed on the guide's draws, on
        the CPU in a param-store scope of its own."""
        import pyro
        import torch
        from pyro import poutine

        program = self.loss_program(self.load_module(self.score_module(), params))
        data = torch.as_tensor(x, dtype=torch.float32)
        total = np.zeros(len(x))
        with torch.no_grad(), torch.random.fork_rng(), pyro.get_param_store().scope():
            pyro.set_rng_seed(seed)
            for _ in range(repeats):
                guide = poutine.trace(program.guide).get_trace(data)
                model = poutine.trace(poutine.replay(program.model, trace=guide)).get_trace(data)
                site = model.nodes[FACTOR]
                term = -site["fn"].log_prob(site["value"]) * site["scale"]
                total += term.reshape(-1, len(x)).sum(0).double().numpy()
        return total / repeats

    def loss_metrics(self, params, train, test, seed: int) -> dict:
        """``loss`` on (up to ``TRAIN_EVAL_ROWS`` of) the training rows and ``test_loss`` on the
        held-out rows, per datum, each with its standard error over rows."""
        out: dict = {}
        rng = np.random.default_rng(seed)
        for key, x in (("loss", train), ("test_loss", test)):
            if x is None or len(x) == 0:
                continue
            if key == "loss" and len(x) > TRAIN_EVAL_ROWS:
                x = x[np.sort(rng.choice(len(x), TRAIN_EVAL_ROWS, replace=False))]
            rows = self.per_datum_loss(params, x, seed)
            out[key] = float(rows.mean())
            out[key + "_stderr"] = (
                float(rows.std(ddof=1) / np.sqrt(len(rows))) if len(rows) > 1 else 0.0
            )
        return out

    def to_data_units(self, x: np.ndarray) -> np.ndarray:
        """Samples in model units (n, D) -> data units shaped like the data."""
        x = np.asarray(x, dtype=float)
        if not self.scaling.identity:
            x = np.round(self.scaling.inverse(np.clip(x, -1.0, 1.0)))
        return x.reshape((len(x),) + self.data.event_shape)

    def sample_distance(self, samples: np.ndarray, train, held, seed: int, prefix: str) -> dict:
        """Sliced Wasserstein of samples to the held-out data, beside the floor (training
        data to held-out data at the same size), for vector data."""
        from probdiff.diagnostics import sliced_wasserstein

        if self.data.kind != "vector":
            return {}
        out = {prefix + "sliced_wasserstein": sliced_wasserstein(samples, held, seed=seed)}
        if prefix and train is not None and len(train):
            out["sliced_wasserstein_train_test"] = sliced_wasserstein(
                train[: len(held)], held, seed=seed
            )
        return out
