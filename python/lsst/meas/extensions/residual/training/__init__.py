"""Training data (simulated scenes through the first pass, labels, cache) and the training loop."""

from .dataset import *  # noqa: F401,F403
from .labels import *  # noqa: F401,F403
from .scenes import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403
