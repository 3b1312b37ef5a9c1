"""LSST-like multi-band scene simulator with truth (our stand-in for PhoSim)."""

from .simulate import *  # noqa: F401,F403
from .survey import *  # noqa: F401,F403
