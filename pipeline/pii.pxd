# C-level declarations for the module of the same name, compiled by pipeline/compiled_core.py
# (docs/compiled-core.md): the contract checks (validation) call it for every event's ids.

cpdef bint is_pseudonymised(object value)
