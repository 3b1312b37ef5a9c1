"""Evaluation of a model package on held-out simulated scenes, against classical baselines.

Matching, labels and metrics are shared with training and live in
`lsst.meas.extensions.residual.groundtruth`.
"""

from .baselines import *  # noqa: F401,F403
from .evaluate import *  # noqa: F401,F403
