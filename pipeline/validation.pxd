# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md): the contract checks every event passes before it touches state.
# Integers are `long long`; anything else a field may hold is `object`.

from pipeline.events cimport Identify, Join, Purchase, Refund, Share, Touchpoint, UserRef
from pipeline.pii cimport is_pseudonymised

cdef class Limits:
    cdef readonly long long max_message_bytes, max_amount_minor, max_future_ms, earliest_ms
    cdef readonly object brands, groups

cpdef _check_pseudonymised(object where, UserRef user)
cpdef _check_identities(Touchpoint e)
cpdef bint _is_slug(object brand)
cpdef object validate(Touchpoint e, long long now_ms, Limits limits)
