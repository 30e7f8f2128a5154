"""The audio modality: read a video's (or a sound file's) audio, VGGish's log-mel front end, VGGish
embeddings from local weights, and per-video-frame audio features aligned by time stamp.

Modules:
    read: `read_audio`, `read_audio_timed`, `resample`, `AudioError`.
    logmel: `log_mel`, `vggish_examples`, `example_centres` (VGGish's front end, torchvggish's code).
    vggish: `load_vggish`, `vggish_embed` (torchvggish's architecture; weights from `audio.vggish_weights`).
    features: `AUDIO_FEATURES`, `make_extractor`, `frame_audio_features`, `clip_vector`,
        `write_audio_table`, `read_audio_table`.

torchvggish's modules are loaded without its package `__init__`, so resampy (and numba) are never imported.
"""
