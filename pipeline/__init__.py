"""touchflow's own logic: the pure domain core, configuration, app wiring and CLI."""

from pipeline.core_loader import use_source_where_needed

# The core's compiled extensions (docs/compiled-core.md) shadow their .py modules; a
# stale one, or any with TOUCHFLOW_INTERPRETED=1, is loaded from its .py instead.
use_source_where_needed()
