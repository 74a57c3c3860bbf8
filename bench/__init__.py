"""The benchmark: the server over HTTP against the raw model, in one run.

``python -m bench`` measures raw padded ``generate`` in-process (:mod:`bench.raw`),
starts the server (:mod:`bench.server`), drives it with streaming requests
(:mod:`bench.client`) and writes a table, JSON and a plot (:mod:`bench.report`).
Plain Python: nothing here imports Django, so the same code can drive any
OpenAI-compatible server.
"""
