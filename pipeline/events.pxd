# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md). Integers are `long long` where the Avro schemas say `long`;
# anything else a field may hold is `object`: a `str` or `tuple` here would refuse the
# subclasses (a StrEnum member) the uncompiled module takes.
import cython

# A class marked `@cython.no_gc` below is a value class (numbers, strings, tuples and
# other values only: no reference cycle can pass through one), built without the cycle
# collector's support (compiled_core.untracked_classes); the others keep it.
@cython.no_gc
cdef class UserRef:
    cdef readonly object id_type, id

@cython.no_gc
cdef class Join:
    cdef readonly object kind, source
    cdef readonly UserRef referrer

@cython.no_gc
cdef class Leave:
    cdef readonly object kind

@cython.no_gc
cdef class Purchase:
    cdef readonly object order_id
    cdef readonly long long amount_minor
    cdef readonly object currency
    cdef readonly long long items
    cdef readonly object place

@cython.no_gc
cdef class Refund:
    cdef readonly object order_id
    cdef readonly long long amount_minor
    cdef readonly object currency

@cython.no_gc
cdef class Chat:
    cdef readonly object direction, party

@cython.no_gc
cdef class Share:
    cdef readonly object content_id
    cdef readonly UserRef invitee

@cython.no_gc
cdef class Identify:
    cdef readonly object identities

@cython.no_gc
cdef class Touchpoint:
    cdef readonly object event_id, type, brand, channel
    cdef readonly UserRef user
    cdef readonly long long occurred_at
    cdef readonly object payload
