"""LSST-like multi-band scene simulator with truth (our stand-in for PhoSim)."""

from .artefacts import ArtefactConfig, NoiseKernelConfig  # noqa: F401
from .simulate import *  # noqa: F401,F403
from .survey import *  # noqa: F401,F403
