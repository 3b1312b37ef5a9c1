"""ResidualDetectron: find the sources the Scarlet deblender missed.

The core (scene format, simulator, detection, deblender, network, training)
depends only on numpy/scipy/astropy/galsim/torch; the Butler tasks in
`lsst.meas.extensions.residual.tasks` are thin adapters around it.
"""

try:
    from .version import __version__
except ImportError:  # not installed: running from a source tree
    __version__ = "0.0.0"

from .bands import *  # noqa: F401,F403
from .scene import *  # noqa: F401,F403
