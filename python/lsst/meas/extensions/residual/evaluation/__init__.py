"""Evaluation against truth: matching, metrics, baselines, reports."""

from .matching import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
