# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md). Only our own extension types are named as argument types
# (they accept None as the module does); everything else is `object`.
import cython

from pipeline.events cimport Touchpoint
from pipeline.state cimport PersonState, Policy
from pipeline cimport state as core

cdef long long _DUE_UNKNOWN, _DUE_NEVER

@cython.locals(plain=dict)
cpdef PersonState _stored(object store, object key)
@cython.locals(plain=dict)
cpdef _store(object store, object key, PersonState s)

cdef class Outcome:
    cdef public list changes, referrals, written
    cdef public object duplicate, redelivered, late

@cython.locals(out=Outcome)
cpdef Outcome _new_outcome()

cdef class PartitionEngine:
    cdef public Policy policy
    cdef public object store
    cdef public long long allowed_lateness_ms
    cdef public object max_event_time
    cdef public list _due_times
    cdef public dict _due_keys
    cdef public Py_ssize_t _entries

    @cython.locals(keys=list, due=cython.longlong)
    cpdef schedule(self, object key, PersonState s)
    cpdef rescheduled(self, object key, PersonState old, PersonState new)
    @cython.locals(s=PersonState, keys=list, times=list, current=cython.longlong)
    cpdef list fire_due(self, object now, object written=*)
    @cython.locals(times=list, t=cython.longlong, latest=cython.longlong, wm=cython.longlong)
    cpdef Outcome on_event(self, Touchpoint event, object person_id, object offset=*, Outcome out=*, object source=*)
    @cython.locals(old=PersonState, new=PersonState)
    cpdef _apply(self, Touchpoint event, object person_id, object offset, Outcome out, object own_brand, object source)
