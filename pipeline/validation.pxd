# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md): the contract checks every event passes before it touches state.
# Integers are `long long`; anything else a field may hold is `object`.

from pipeline.events cimport Touchpoint

cdef class Limits:
    cdef readonly long long max_message_bytes, max_amount_minor, max_future_ms, earliest_ms
    cdef readonly object brands, groups

cpdef list _identities(Touchpoint e)
cpdef object validate(Touchpoint e, object now_ms, Limits limits)
