"""The inference engine: plain Python over torch and transformers, never Django.

It loads models described by :class:`inference.types.ModelSpec`, batches concurrent
generation requests in one worker thread per model, and computes embeddings.

Modules: ``types``/``errors`` (the boundary with the web layer), ``engine`` (model
registry: lazy loading, LRU, failure memory), ``loading`` (spec -> local folder, GGUF
conversion cache, device/dtype), ``generator`` (TextGenerator), ``kvcache`` (the
KV pool and its blocks), ``paged_attention``, ``scheduler`` (continuous batching: the
worker loop; its rules in ``scheduling_policy`` and ``output_processing``),
``memory`` (size settings), ``sampling``, ``detokenize`` and ``embeddings``. Benchmarks
live in ``bench/`` (``python -m bench``; KV scenarios: ``python -m bench --kv``; batch
determinism: ``python -m bench.determinism``).
Importing this package does not import torch; the submodules do.
"""
