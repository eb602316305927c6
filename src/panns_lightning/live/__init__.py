"""Live audio (a microphone, stdin): decode a PCM stream, tag a sliding window every hop, report events once.

"Live" names this package so that it is not confused with the training data's streams
(``data/``: shard sets read as a stream of clips); here a stream is the bytes on a pipe.

``pcm.py`` reads raw PCM or a WAV stream from a pipe (numpy only); ``resample.py`` resamples
chunk by chunk; ``ring.py`` keeps the last window; ``tagger.py`` (``StreamTagger``) runs the model
every hop; ``events.py`` (``EventTracker``) turns probabilities into onset/offset events with
hysteresis. ``panns-tag --stream -`` is the command line on top.

Import from the modules (``from panns_lightning.live.tagger import StreamTagger``): this
file imports nothing, so ``panns-tag --help`` does not wait for torch.
"""

DEFAULT_WINDOW_SECONDS = 2.0
"""Seconds of audio per analysis: PANNs saw 10 s clips, but a shorter window reacts faster."""
DEFAULT_HOP_SECONDS = 1.0
"""Seconds between analyses: Cnn14 with a 2 s window every second runs faster than real time on a few CPU cores."""
MAX_WINDOW_SECONDS = 60.0
"""Longest analysis window (and so hop): its ring is ``window x model rate`` floats, 7.7 MB at 32 kHz.
PANNs saw 10 s clips; a window of a minute already reports a sound long after it stopped."""
