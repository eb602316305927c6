"""Diagnostics of the data path: what the sampler does, measured; nothing training runs imports these.

- :mod:`.inspect`: ``panns-prepare inspect`` — a shard set's summary and the train stream's draws;
- :mod:`.balance`: one set of class-balance figures for any sampler (ours and PANNs' alike);
- :mod:`.reference`: PANNs' BalancedTrainSampler, re-implemented as the yardstick;
- :mod:`.simulate`: ``python -m panns_lightning.data.diagnostics.simulate`` — the balanced stream
  labels-only at AudioSet scale (docs/balanced_streaming.md).
"""
