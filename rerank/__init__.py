"""POST /v1/rerank (also /rerank and /v2/rerank, Jina's and Cohere's shape) and vLLM's
POST /score: relevance scores from a cross-encoder row or an embeddings row."""
