"""Scarlet-compatible deblending: the first (and second) deblending pass.

A re-implementation of the scarlet_lite model as LSST's meas_extensions_scarlet
uses it (factorised components in a model frame with a narrow Gaussian PSF,
monotonicity and sparsity constraints, proximal ADAM), written with
numpy/scipy, plus LSST's scarlet model data format.
"""

from .config import *  # noqa: F401,F403
from .deblend import *  # noqa: F401,F403
from .frames import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
from .model_data import *  # noqa: F401,F403
from .peaks import *  # noqa: F401,F403
from .plot import *  # noqa: F401,F403
from .psf import *  # noqa: F401,F403
from .render import *  # noqa: F401,F403
from .scarlet_io import *  # noqa: F401,F403
from .sub_blends import *  # noqa: F401,F403
