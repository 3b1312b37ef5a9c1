"""Training data (labelled simulated scenes through the first pass, cached) and the training loop."""

from .dataset import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403
