"""API keys, per-key model allow-lists and per-key rate limits for the /v1/ API."""
