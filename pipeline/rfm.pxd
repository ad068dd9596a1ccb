# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md). Integers are `long long` where the Avro schemas say `long`;
# anything else a field may hold is `object`: a `str` or `tuple` here would refuse the
# subclasses (a StrEnum member) the uncompiled module takes.
import cython

cdef long long _DAY_MS

# A class marked `@cython.no_gc` below is a value class (numbers, strings, tuples and
# other values only: no reference cycle can pass through one), built without the cycle
# collector's support (compiled_core.untracked_classes); the others keep it.
cdef class RfmPolicy:
    cdef readonly long long window_days
    cdef readonly object recency_days, frequency_orders, monetary_minor
    cdef readonly long long high_score

@cython.no_gc
cdef class RfmScores:
    cdef readonly long long r, f, m, recency_days, orders, amount_minor

@cython.no_gc
cdef class Window:
    cdef readonly long long orders, amount_minor

cpdef long long day_of(long long ms)
cpdef object add_purchase(object buckets, long long day, long long orders, long long amount_minor)
cpdef object trim(object buckets, long long today, long long window_days)
@cython.locals(first=cython.longlong, orders=cython.longlong, amount=cython.longlong, d=cython.longlong, o=cython.longlong, a=cython.longlong, n=Window)
cpdef Window window(object buckets, long long today, RfmPolicy policy)
@cython.locals(recency=cython.longlong, n=RfmScores)
cpdef RfmScores score_window(Window w, long long last_purchase_day, long long today, RfmPolicy policy)
@cython.locals(n=cython.longlong, t=cython.longlong)
cpdef long long _below(object thresholds, long long value)
@cython.locals(n=cython.longlong, t=cython.longlong)
cpdef long long _at_or_below(object thresholds, long long value)
@cython.locals(high=cython.longlong, bits=cython.int)
cpdef object segment(RfmScores scores, RfmPolicy policy)
