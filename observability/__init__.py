"""The access log, Prometheus metrics and heap trimming: what the apps report to and
operators read. Imports ``core``, never an app or the composition root (``gpt3dev``);
``tests/test_layering.py`` checks it.
"""
