"""What `pipeline.state` reads of Cython's `cython` module when Cython is not installed
(a runtime image without the build's tools): the module then runs as plain Python, as
Cython's own stand-in module would say (`cython.compiled` is False)."""

compiled = False
