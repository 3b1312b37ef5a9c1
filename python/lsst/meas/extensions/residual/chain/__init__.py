"""The patch-level chain, in the core (no Butler): both the command line and the PipelineTasks call it.

first-pass detection + deblend (`first_pass`) -> new sources in the
residuals (`new_sources`) -> second deblending pass and the outputs in the
one output schema (`run`, `catalogs`); `placement` and `ids` put a patch's
outputs in its tract's pixels and ids.
"""

from .catalogs import *  # noqa: F401,F403
from .first_pass import *  # noqa: F401,F403
from .ids import *  # noqa: F401,F403
from .new_sources import *  # noqa: F401,F403
from .placement import *  # noqa: F401,F403
from .run import *  # noqa: F401,F403
