# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md). Integers are `long long` where the Avro schemas say `long`;
# anything else a field may hold is `object`: a `str` or `tuple` here would refuse the
# subclasses (a StrEnum member) the uncompiled module takes.

cdef class AiplPolicy:
    cdef readonly long long interest_min_engagements, loyalty_min_orders

cpdef object aipl_stage(object engagements, object lifetime_orders, object window_orders, AiplPolicy policy)
