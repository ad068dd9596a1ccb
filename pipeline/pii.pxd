# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md): the contract checks (validation) call it for every event's ids.

import cython

@cython.locals(text=str, i=Py_ssize_t, c=cython.Py_UCS4)
cpdef bint is_pseudonymised(object value)
