# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md). Integers are `long long` where the Avro schemas say `long`;
# anything else a field may hold is `object`: a `str` or `tuple` here would refuse the
# subclasses (a StrEnum member) the uncompiled module takes.

import cython

from pipeline.events cimport Chat, Join, Purchase, Refund, Share, Touchpoint
from pipeline.lifecycle cimport LifecyclePolicy, PurchaseHistory
from pipeline.rfm cimport RfmPolicy
from pipeline cimport rfm, stages
from pipeline cimport lifecycle as lc
from pipeline.stages cimport AiplPolicy

cdef long long _DUE_UNKNOWN, _DUE_NEVER, _MS_PER_DAY, _ALL_FACTS, _AIPL_STAGE_BIT

# The hash an exact str caches, read from the object (`holds_id`, compiled only): Python
# computes and stores it on first use, here too (PyObject_Hash when not yet cached).
cdef extern from *:
    """
    static CYTHON_INLINE Py_hash_t touchflow_str_hash(PyObject *s) {
        Py_hash_t h = ((PyASCIIObject *)s)->hash;
        return h != -1 ? h : PyObject_Hash(s);
    }
    """
    Py_hash_t _str_hash "touchflow_str_hash" (object s) except? -1

# `(*ids, event_id)[-keep:]` as one new tuple (`_with_id`, compiled only; keep >= 1).
cdef extern from *:
    """
    static PyObject *touchflow_with_id(PyObject *ids, PyObject *id, Py_ssize_t keep) {
        Py_ssize_t n = PyTuple_GET_SIZE(ids);
        Py_ssize_t start = n < keep ? 0 : n - keep + 1;
        Py_ssize_t kept = n - start;
        PyObject *t = PyTuple_New(kept + 1);
        if (t == NULL) return NULL;
        for (Py_ssize_t i = 0; i < kept; i++) {
            PyObject *x = PyTuple_GET_ITEM(ids, start + i);
            Py_INCREF(x);
            PyTuple_SET_ITEM(t, i, x);
        }
        Py_INCREF(id);
        PyTuple_SET_ITEM(t, kept, id);
        return t;
    }
    """
    tuple _with_id_c "touchflow_with_id" (tuple ids, object event_id, Py_ssize_t keep)

cdef class BrandCore:
    cdef readonly RfmPolicy rfm
    cdef readonly object rules, evaluate
    cdef readonly long long reads
    cdef readonly object day_thresholds

# A class marked `@cython.no_gc` below is a value class (numbers, strings, tuples and
# other values only: no reference cycle can pass through one), built without the cycle
# collector's support (compiled_core.untracked_classes); the others keep it.
cdef class Policy:
    cdef readonly RfmPolicy rfm
    cdef readonly AiplPolicy aipl
    cdef readonly LifecyclePolicy lifecycle
    cdef readonly object rules
    cdef readonly dict brand_rfm  # dicts: a lookup per event in C (`Policy` says so too)
    cdef readonly long long dedup_window
    cdef readonly object version
    cdef readonly long long referral_window_days
    cdef readonly dict brand_groups
    cdef readonly dict _rules_by_brand, _cores
    cdef readonly object _last_brand
    cdef readonly BrandCore _last_core
    cpdef object groups_of(self, object brand)
    cpdef RfmPolicy rfm_for(self, object brand)
    cpdef object rules_for(self, object brand)
    cpdef BrandCore core_for(self, object brand)

@cython.no_gc
cdef class Scores:
    cdef readonly long long r, f, m

@cython.no_gc
cdef class Aggregates:
    cdef readonly long long first_seen, last_seen, engagements, shares, invitations
    cdef readonly long long lifetime_orders, lifetime_amount_minor
    cdef readonly long long first_purchase_day, last_purchase_day, previous_purchase_day
    cdef readonly object buckets, recent_orders, pending_refunds
    cdef readonly long long last_join, last_leave, acquired_at
    cdef readonly object acquisition_channel, acquisition_source, referred_by
    cdef readonly long long referred_at, converted_invitees
    @cython.locals(h=PurchaseHistory)
    cpdef PurchaseHistory purchase_history(self)

@cython.no_gc
cdef class Derived:
    cdef readonly Scores scores
    cdef readonly object rfm_segment, aipl_stage, lifecycle, tags, layers, window

@cython.no_gc
cdef class PersonState:
    cdef readonly long long version, seq, last_offset, as_of
    cdef readonly object recent_event_ids
    cdef readonly Aggregates agg
    cdef readonly Derived derived
    cdef readonly object source_offsets
    cdef readonly long long due

@cython.no_gc
cdef class SegmentChange:
    cdef readonly object brand, person_id, dimension, from_value, to_value, rule
    cdef readonly object cause_event_id
    cdef readonly long long event_time, seq
    cdef readonly Scores scores_before, scores_after
    cdef readonly object policy_version

@cython.locals(n=Scores)
cpdef Scores _new_scores(long long r, long long f, long long m)
@cython.locals(n=Derived)
cpdef Derived _new_derived(Scores scores, object rfm_segment, object aipl_stage, object lifecycle, object tags, object layers, object window)
@cython.locals(n=PersonState)
cpdef PersonState _new_state(long long version, long long seq, long long last_offset, long long as_of, object recent_event_ids, Aggregates agg, Derived derived, object source_offsets, long long due)
@cython.locals(n=SegmentChange)
cpdef SegmentChange _new_change(object brand, object person_id, object dimension, object from_value, object to_value, object rule, object cause_event_id, long long event_time, long long seq, Scores scores_before, Scores scores_after, object policy_version)
@cython.locals(n=Aggregates)
cpdef PersonState _first_state(long long t)
# An effect's draft (`n`) is typed: its fields are then set in C (state.py, `_draft`).
@cython.locals(n=Aggregates)
cpdef Aggregates _draft(Aggregates a)
cpdef Aggregates _sealed(Aggregates d)
@cython.locals(n=Aggregates)
cpdef Aggregates _seen_at(Aggregates a, long long t)
cpdef object _subscribed(Aggregates a)
@cython.locals(n=Aggregates, latest_day=cython.longlong, day=cython.longlong, in_order=cython.bint)
cpdef Aggregates _add_order(Aggregates a, object order_id, long long t, long long amount)
@cython.locals(n=Aggregates)
cpdef Aggregates _take_refund(Aggregates a, object order_id, object amount)
@cython.locals(n=Aggregates)
cpdef Aggregates _with_pending_refund(Aggregates a, object order_id, object amount)
# each payload typed: its fields are C reads
@cython.locals(n=Aggregates, p=Purchase)
cpdef Aggregates _on_purchase(Aggregates a, Touchpoint e)
@cython.locals(p=Refund)
cpdef Aggregates _on_refund(Aggregates a, Touchpoint e)
@cython.locals(n=Aggregates, p=Chat)
cpdef Aggregates _on_chat(Aggregates a, Touchpoint e)
@cython.locals(n=Aggregates, p=Share)
cpdef Aggregates _on_share(Aggregates a, Touchpoint e)
@cython.locals(n=Aggregates, p=Join)
cpdef Aggregates _on_join(Aggregates a, Touchpoint e)
@cython.locals(n=Aggregates)
cpdef Aggregates _on_leave(Aggregates a, Touchpoint e)
@cython.locals(n=Aggregates)
cpdef Aggregates _on_other(Aggregates a, Touchpoint e)
cpdef Aggregates _effect(Aggregates a, Touchpoint e)
@cython.locals(bc=BrandCore, reads=cython.longlong)
cpdef Derived derive(Aggregates a, object brand, long long now, Policy policy, Derived scored=*, long long changed=*, Derived prior=*)
@cython.locals(moved=cython.longlong, p=Scores, w=rfm.Window)
cpdef long long _moved_in_time(Derived prior, Scores scores, object segment, object stage, object life, object window)
cpdef bint _same_scoring_inputs(Aggregates a, Aggregates b)
@cython.locals(moved=cython.longlong)
cpdef long long _changed_other_facts(Aggregates a, Aggregates b)
cpdef object _rule_of(object dim, Derived d, Aggregates a, object brand, Policy policy)
cpdef object next_due(PersonState s, object brand, Policy policy)
@cython.locals(today=cython.longlong, best=cython.longlong, d=cython.longlong, t=cython.longlong, first=cython.longlong, rp=RfmPolicy, bc=BrandCore)
cpdef long long compute_due(Aggregates a, long long as_of, object brand, Policy policy)
cpdef list _changes(Derived before, Derived after, Aggregates agg, object brand, object person_id, object cause, long long at, long long seq, Policy policy)
@cython.locals(derived=Derived, new=PersonState, n=Aggregates, now=cython.longlong, prior=Derived, changed=cython.longlong)
cpdef tuple _recompute(PersonState s, Aggregates agg, object brand, object person_id, object cause, long long at, Policy policy, object last_offset=*, object recent=*, object same_policy=*, object sources=*)
@cython.locals(sa=Scores, sb=Scores)
cpdef bint _same_derived(Derived a, Derived b)
cpdef bint _holds_at(PersonState s, long long now)
cpdef bint is_duplicate(PersonState state, Touchpoint event)
@cython.locals(h=cython.Py_hash_t)
cpdef bint holds_id(tuple ids, object event_id)
cpdef tuple advance(PersonState state, object brand, object person_id, object now, Policy policy)
cpdef bint is_forwarded_again(PersonState state, object source)
@cython.locals(n=Py_ssize_t)
cpdef tuple _with_id(tuple ids, object event_id, Py_ssize_t keep)
@cython.locals(a=Aggregates, t=cython.longlong)
cpdef tuple apply_new(PersonState state, Touchpoint event, object person_id, Policy policy, object offset=*, object source=*)
cpdef object state_key(object brand, object person_id)
cpdef tuple split_state_key(object key)
@cython.locals(key=str)
cpdef bytes table_key(object brand, object person_id)
@cython.locals(text=str, i=Py_ssize_t)
cpdef tuple split_table_key(bytes key)
cpdef object referral_conversion(PersonState before, PersonState after, Touchpoint event, Policy policy)
@cython.locals(n=Aggregates)
cpdef tuple apply_referral(PersonState state, object brand, object person_id, object invitee, object at, Policy policy)
