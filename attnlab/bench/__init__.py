"""Benchmarks behind ``attnlab bench``: timings and peak memory.

Only the CLI (and the scripts in ``benchmarks/``) import this package; the library never does.

* :mod:`.attention`: kernels against SDPA and a naive implementation, and structured masks.
* :mod:`.impls`: what one case runs. :mod:`.measure`: how it is timed, measured and isolated.
* :mod:`.report`: rich tables and the JSON file.
"""
