# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md): the wire codecs every event, change and state passes through.
# Compiled as it is (its classes stay Python classes); the conversions named here are
# called from C within the module.

import cython

from pipeline.events cimport Chat, Join, Purchase, Share, Touchpoint, UserRef

cdef dict _BY_RECORD, _EVENT_TYPES, _TYPE_OF_RECORD
cdef object _JOIN, _PURCHASE, _CHAT, _SHARE

@cython.locals(u=UserRef)
cpdef UserRef _user_ref(object id_type, object id)
cpdef UserRef _user(object d)
@cython.locals(p=Join)
cpdef Join _join_from_avro(dict d)
@cython.locals(p=Purchase)
cpdef Purchase _purchase_from_avro(dict d)
@cython.locals(p=Chat)
cpdef Chat _chat_from_avro(dict d)
@cython.locals(p=Share)
cpdef Share _share_from_avro(dict d)
cpdef object _payload_from_avro(object event_type, object record_name, dict d)
@cython.locals(t=Touchpoint)
cpdef Touchpoint _touchpoint(object event_id, object event_type, object brand, object channel, UserRef user, long long occurred_at, object payload)
cpdef Touchpoint touchpoint_from_record(dict r)
