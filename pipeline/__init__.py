"""touchflow's own logic: the pure domain core, configuration, app wiring and CLI."""
