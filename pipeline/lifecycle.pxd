# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md). Integers are `long long` where the Avro schemas say `long`;
# anything else a field may hold is `object`: a `str` or `tuple` here would refuse the
# subclasses (a StrEnum member) the uncompiled module takes.
import cython

# A class marked `@cython.no_gc` below is a value class (numbers, strings, tuples and
# other values only: no reference cycle can pass through one), built without the cycle
# collector's support (compiled_core.untracked_classes); the others keep it.
cdef class LifecyclePolicy:
    cdef readonly long long new_days, at_risk_days, rhythm_min_orders
    cdef readonly object rhythm_factor
    cdef readonly long long rhythm_floor_days, dormant_days, churned_days, won_back_days

@cython.no_gc
cdef class PurchaseHistory:
    cdef readonly long long orders, first_day, last_day, previous_day

@cython.locals(mean_interval=cython.double, x=cython.double, days=cython.longlong)
cpdef long long at_risk_after(PurchaseHistory h, LifecyclePolicy policy)
cpdef bint _returned_after_dormancy(PurchaseHistory h, LifecyclePolicy policy)
cpdef object lifecycle(PurchaseHistory h, object today, LifecyclePolicy policy)
cpdef object rule_of(object stage, PurchaseHistory h, LifecyclePolicy policy)
cpdef object transition_days(PurchaseHistory h, LifecyclePolicy policy)
@cython.locals(best=cython.longlong)
cpdef long long next_transition_day(PurchaseHistory h, long long today, LifecyclePolicy policy)
cpdef long long _earliest_after(long long best, long long day, long long today)
