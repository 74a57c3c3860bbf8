"""The inference engine: plain Python over torch and transformers, never Django.

It loads models described by :class:`inference.types.ModelSpec`, batches concurrent
generation requests in one worker thread per model, and computes embeddings.
"""
