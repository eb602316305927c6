"""Tag a collection of files at the hardware's speed (``panns-tag DIR``).

* :mod:`.sources`: which files (folders walked by extension);
* :mod:`.prefetch`: decoding and resampling in worker processes, bounded and in order;
* :mod:`.batcher`: windows of many files per forward pass, results per file in input order;
* :mod:`.backends` / :mod:`.onnx_cache`: PyTorch (fp32 / bf16) or ONNX Runtime, the ONNX export cached;
* :mod:`.writers` / :mod:`.report` / :mod:`.progress`: JSONL / CSV / embeddings / SED files, the bar;
* :mod:`.run`: the pieces put together.

Imports neither Lightning nor the training stack (an import contract checks it).
"""
