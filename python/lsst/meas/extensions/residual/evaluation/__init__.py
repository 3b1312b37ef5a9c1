"""Evaluation against truth: matching, metrics, reports."""

from .matching import *  # noqa: F401,F403
