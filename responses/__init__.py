"""POST /v1/responses and its stored state: OpenAI's Responses API over the chat engine."""
