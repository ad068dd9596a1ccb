# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md): the ClickHouse rows of every event, change and state the sink
# writes (and the hot path of the benchmark builds).

import cython

from pipeline.events cimport Join, Purchase, Refund, Share, Touchpoint
from pipeline.state cimport Aggregates, Derived, PersonState, Scores, SegmentChange

cpdef list event_row(Touchpoint e, object person_id, object partition, object offset)
@cython.locals(a=Aggregates, d=Derived)
cpdef list state_row(object brand, object person_id, PersonState s)
@cython.locals(b=Scores, a=Scores)
cpdef list change_row(SegmentChange c)
