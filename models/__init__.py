"""Generative programs, one family per module; importing this package registers them."""

from probdiff.models import gmm_family  # noqa: F401  (registers ``gmm``)
from probdiff.models import vae_family  # noqa: F401  (registers ``vae``)
from probdiff.models import ddpm_family  # noqa: F401  (registers ``ddpm``)
from probdiff.models import ncsn_family  # noqa: F401  (registers ``ncsn``)
from probdiff.models import sde_family  # noqa: F401  (registers ``sde``)
