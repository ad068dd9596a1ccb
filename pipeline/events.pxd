# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md). Integers are `long long` where the Avro schemas say `long`;
# anything else a field may hold is `object`: a `str` or `tuple` here would refuse the
# subclasses (a StrEnum member) the uncompiled module takes.

cdef class UserRef:
    cdef readonly object id_type, id

cdef class Join:
    cdef readonly object kind, source
    cdef readonly UserRef referrer

cdef class Leave:
    cdef readonly object kind

cdef class Purchase:
    cdef readonly object order_id
    cdef readonly long long amount_minor
    cdef readonly object currency
    cdef readonly long long items
    cdef readonly object place

cdef class Refund:
    cdef readonly object order_id
    cdef readonly long long amount_minor
    cdef readonly object currency

cdef class Chat:
    cdef readonly object direction, party

cdef class Share:
    cdef readonly object content_id
    cdef readonly UserRef invitee

cdef class Identify:
    cdef readonly object identities

cdef class Touchpoint:
    cdef readonly object event_id, type, brand, channel
    cdef readonly UserRef user
    cdef readonly long long occurred_at
    cdef readonly object payload
