"""Butler PipelineTasks: thin adapters between the Butler and the core.

``FirstPassDetectionTask`` and ``FirstPassDeblendTask`` make the chain run
from PyPI packages alone (the embedded default); ``ResidualDetectionTask``
finds what the first pass missed; ``ResidualDeblendTask`` is the second
deblending pass. `repo` sets up a repository without lsst.skymap or afw.
"""

from .deblend import *  # noqa: F401,F403
from .detection import *  # noqa: F401,F403
from .residual_detection import *  # noqa: F401,F403
