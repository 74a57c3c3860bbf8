"""The gpt3dev Django project: settings, URLs, ASGI/WSGI entry points and the HTTP glue
every app shares (OpenAI error payloads, JSON parsing, SSE framing, health)."""
