"""The browser playground: chat, token probabilities and embeddings over this server's own API."""
