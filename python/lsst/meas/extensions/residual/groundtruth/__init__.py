"""Simulated scenes against their truth, for training and evaluation alike.

`matching` pairs positions one to one; `labels` says which true sources a
detector should find (and their masks); `scenes` takes a simulated scene
through the first pass and labels it; `metrics` scores detections against the
labels. Training and evaluation both build on these and do not import each
other.
"""

from .labels import *  # noqa: F401,F403
from .matching import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .scenes import *  # noqa: F401,F403
