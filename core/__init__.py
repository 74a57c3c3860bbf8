"""What every app imports: OpenAI error payloads, JSON and SSE helpers, request
validation, the request context and the process's lifecycle flag.

It imports no app, nothing of ``observability`` and nothing of the composition root
(``gpt3dev``); ``tests/test_layering.py`` checks it.
"""
