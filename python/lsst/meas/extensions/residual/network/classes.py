"""The classes a network reports: what its labels 1, 2, ... name (label 0 is background)."""

from __future__ import annotations

__all__ = ["CLASSES", "ARTEFACT_CLASS"]

#: Source classes, in label order.
CLASSES = ("star", "galaxy")
#: The class of artefacts, after the source classes in a model trained with artefact targets. A
#: detection of this class is written to ``new_sources`` with it, and never becomes a peak of the
#: second pass.
ARTEFACT_CLASS = "artefact"
