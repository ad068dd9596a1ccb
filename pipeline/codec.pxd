# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md): the wire codecs every event, change and state passes through.
# Compiled as it is (its classes stay Python classes); the conversions named here are
# called from C within the module.

from pipeline.events cimport Touchpoint

cpdef Touchpoint touchpoint_from_record(dict r)
