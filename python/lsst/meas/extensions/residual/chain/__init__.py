"""The patch-level chain, in the core (no Butler): both the command line and the PipelineTasks call it.

first-pass detection -> first-pass deblend -> find new sources in the
residuals -> second deblending pass -> final catalog.
"""

from .first_pass import *  # noqa: F401,F403
