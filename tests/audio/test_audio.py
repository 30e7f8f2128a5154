"""The audio modality: reading, VGGish's log-mel front end, VGGish from local weights, per-frame features
aligned by time stamp, and the Parquet cache."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import get_window, resample_poly

from pipeline.audio import features as audio_features
from pipeline.audio import logmel
from pipeline.audio import read as audio_read
from pipeline.audio.features import (
    AUDIO_FEATURES,
    AudioTableError,
    audio_table_extractor,
    clip_vector,
    frame_audio_features,
    make_extractor,
    read_audio_table,
    write_audio_table,
)
from pipeline.audio.logmel import (
    band_centres,
    example_centres,
    log_mel,
    n_log_mel_frames,
    pad_to_example,
    vggish_examples,
)
from pipeline.audio.read import AudioError, read_audio, read_audio_timed, resample
from pipeline.audio.vggish import (
    load_pca,
    load_state_dict_file,
    load_vggish,
    vggish_embed,
    vggish_network,
)

# ---- helpers ----------------------------------------------------------------------------------------------


def tone(seconds: float, rate: int, freq: float = 1000.0, amplitude: float = 0.5, onset: float = 0.0):
    """[N] float32 sine of `freq` Hz, silent before `onset` seconds."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.where(t >= onset, amplitude * np.sin(2 * np.pi * freq * t), 0.0).astype(np.float32)


def reference_log_mel(x: np.ndarray, rate: int = 16000) -> np.ndarray:
    """VGGish's log-mel written out from its definition with numpy/scipy: periodic Hann 400 / hop 160 /
    FFT 512 magnitudes, 64 HTK-mel triangles 125-7500 Hz (no DC), log(mel + 0.01)."""
    win, hop, nfft = 400, 160, 512
    n = 1 + (len(x) - win) // hop
    frames = np.stack([x[i * hop : i * hop + win] for i in range(n)]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(frames * get_window("hann", win, fftbins=True), nfft))  # [n, 257]

    def mel(f):
        return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)

    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    bins = mel(np.linspace(0.0, rate / 2, nfft // 2 + 1))[:, None]
    rising = (bins - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[2:] - bins) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0
    return np.log(spectrum @ weights + 0.01)


def clips_with_audio(folder: Path) -> list[Path]:
    """The fixture clips that have an audio stream (checked with PyAV)."""
    found = []
    for path in sorted(folder.iterdir()):
        try:
            with av.open(str(path)) as container:
                if container.streams.audio:
                    found.append(path)
        except av.error.FFmpegError:
            continue
    return found


def make_clip(path: Path, seconds: float = 2.0, fps: int = 25, rate: int = 22050, audio: bool = True) -> Path:
    """A small mp4 (MPEG-4 part 2 video) with a mono AAC 440 Hz tone, or without audio."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("aac", rate=rate, layout="mono") if audio else None
        for i in range(int(seconds * fps)):
            image = np.full((48, 64, 3), (i * 5) % 255, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            x = tone(seconds, rate, 440.0, 0.3)
            for start in range(0, len(x), 1024):
                frame = av.AudioFrame.from_ndarray(
                    x[None, start : start + 1024], format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = rate, start
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


@pytest.fixture
def real_audio(fixture_videos: Path) -> tuple[np.ndarray, int, Path]:
    """Audio of a real clip: no_face.mp4 (speech and noise) when it has audio, else any clip with audio."""
    clips = clips_with_audio(fixture_videos)
    if not clips:
        pytest.skip(f"no clip in {fixture_videos} has an audio stream")
    path = next((clip for clip in clips if clip.name == "no_face.mp4"), clips[0])
    samples, rate = read_audio(path)
    return samples, rate, path


@pytest.fixture(scope="module")
def random_vggish(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """torchvggish's VGGish with seeded random weights, saved in torchvggish's key naming (~290 MB)."""
    torch.manual_seed(0)
    model = vggish_network()
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(model.state_dict(), path)
    return path, model


# ---- log-mel front end ------------------------------------------------------------------------------------


def test_log_mel_matches_an_independent_computation_and_peaks_at_the_tone(monkeypatch):
    x = tone(1.0, 16000, 1000.0) + tone(1.0, 16000, 3000.0, 0.05)
    values, times = log_mel(x, 16000)
    assert values.shape == (1 + (16000 - 400) // 160, 64) and values.dtype == np.float32
    np.testing.assert_allclose(values, reference_log_mel(x), atol=1e-4)
    monkeypatch.setattr(logmel, "BLOCK_FRAMES", 7)  # computed in blocks of frames: the same values
    np.testing.assert_array_equal(log_mel(x, 16000)[0], values)
    np.testing.assert_allclose(times[:2], [0.0125, 0.0225])
    # the loudest band is the one whose (mel) centre is nearest 1 kHz
    centres_mel = 1127.0 * np.log1p(band_centres() / 700.0)
    expected = int(np.argmin(np.abs(centres_mel - 1127.0 * np.log1p(1000.0 / 700.0))))
    assert int(np.argmax(values.mean(axis=0))) == expected
    assert 900 < band_centres()[expected] < 1100


def test_log_mel_resamples_other_rates():
    at_16k, _ = log_mel(tone(1.0, 16000), 16000)
    at_44k, _ = log_mel(tone(1.0, 44100), 44100)
    assert at_44k.shape == at_16k.shape
    assert int(np.argmax(at_44k.mean(axis=0))) == int(np.argmax(at_16k.mean(axis=0)))
    # the bands the tone reaches agree; the others sit at the log floor, where the anti-aliasing filter's
    # residue (1e-3 of full scale) still moves log(mel + 0.01) by up to 0.2
    lit = at_16k.mean(axis=0) > -3.5
    middle = slice(10, -10)  # the resampling filter's edges aside
    assert lit.sum() >= 8 and np.abs(at_44k[middle][:, lit] - at_16k[middle][:, lit]).max() < 0.01
    assert len(resample(np.zeros(44100, np.float32), 44100, 16000)) == 16000


def test_vggish_examples_shapes_and_hops():
    values = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    examples = vggish_examples(values)  # VGGish's default: non-overlapping 0.96 s
    assert examples.shape == (3, 1, 96, 64) and examples.dtype == np.float32
    np.testing.assert_array_equal(examples[1, 0], values[96:192])
    overlapping = vggish_examples(values, hop_seconds=0.24)
    assert overlapping.shape == (1 + (300 - 96) // 24, 1, 96, 64)
    np.testing.assert_array_equal(overlapping[2, 0], values[48:144])
    np.testing.assert_allclose(example_centres(3, 0.24), [0.4875, 0.7275, 0.9675])
    assert vggish_examples(values[:50]).shape == (0, 1, 96, 64)
    assert vggish_examples(pad_to_example(values[:50])).shape == (1, 1, 96, 64)


# ---- reading ----------------------------------------------------------------------------------------------


def test_read_wav_averages_channels(tmp_path):
    rate = 22050
    left, right = tone(0.5, rate, 440.0, 0.4), tone(0.5, rate, 880.0, 0.2)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), rate, subtype="PCM_16")
    samples, got_rate = read_audio(path)
    assert got_rate == rate and samples.dtype == np.float32 and samples.shape == left.shape
    np.testing.assert_allclose(samples, (left + right) / 2, atol=2 / 32768)
    flac = tmp_path / "mono.flac"
    soundfile.write(flac, left, rate)
    np.testing.assert_allclose(read_audio(flac)[0], left, atol=2 / 32768)


def test_read_wav_in_blocks_equals_one_read(tmp_path, monkeypatch):
    """Blocks of 1,000 sample frames (the last one partial) into one array: the same samples as
    libsndfile's one read, channel-averaged."""
    rng = np.random.default_rng(3)
    stereo = rng.uniform(-0.9, 0.9, (10_501, 2)).astype(np.float32)
    path = tmp_path / "long.wav"
    soundfile.write(path, stereo, 48000, subtype="FLOAT")
    monkeypatch.setattr(audio_read, "SOUNDFILE_BLOCK", 1000)
    samples, rate = read_audio(path)
    whole, _ = soundfile.read(path, dtype="float32", always_2d=True)
    assert rate == 48000 and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, whole.mean(axis=1))


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 8000, 16001])
def test_resample_in_blocks_equals_scipy_in_one_call(rate, monkeypatch):
    """Blocks with margins give scipy's one-call result bit for bit, at either end and at every block
    boundary, for down- and up-sampling and a ratio near 1 (a long filter)."""
    samples = np.random.default_rng(rate).standard_normal(8 * rate + 123).astype(np.float32)
    g = gcd(rate, 16000)
    expected = resample_poly(samples, 16000 // g, rate // g).astype(np.float32)
    monkeypatch.setattr(audio_read, "RESAMPLE_BLOCK", rate // 2)  # several blocks
    got = resample(samples, rate, 16000)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_block_resampler_fed_in_pieces_equals_one_call(monkeypatch):
    """Pieces of any size (decoder frames) give `resample`'s samples bit for bit."""
    monkeypatch.setattr(audio_read, "RESAMPLE_BLOCK", 3000)
    rng = np.random.default_rng(5)
    samples = rng.standard_normal(40_000).astype(np.float32)
    resampler = audio_read.BlockResampler(44100, 16000)
    cuts = np.sort(rng.choice(np.arange(1, len(samples)), 60, replace=False))
    got = [resampler.feed(piece) for piece in np.split(samples, cuts)] + [resampler.finish()]
    expected = resample_poly(samples, 160, 441).astype(np.float32)
    np.testing.assert_array_equal(np.concatenate(got), expected)


def test_read_wav_at_a_rate_equals_reading_then_resampling(tmp_path, monkeypatch):
    """Resampling while reading a sound file in blocks gives what reading at the file's rate and then
    `resample` gives, with samples past full scale clipped before resampling."""
    monkeypatch.setattr(audio_read, "SOUNDFILE_BLOCK", 1000)
    monkeypatch.setattr(audio_read, "RESAMPLE_BLOCK", 4000)
    stereo = np.random.default_rng(6).uniform(-1.2, 1.2, (30_001, 2)).astype(np.float32)
    path = tmp_path / "loud.wav"
    soundfile.write(path, stereo, 48000, subtype="FLOAT")
    samples, rate, _ = read_audio_timed(path)
    assert np.abs(samples).max() <= 1.0 < np.abs(stereo.mean(axis=1)).max()
    at_16k, rate_16k, start = read_audio_timed(path, rate=16000)
    assert rate_16k == 16000 and start == 0.0
    np.testing.assert_array_equal(at_16k, resample(samples, rate, 16000))


def test_read_video_at_a_rate_equals_reading_then_resampling(fixture_videos, monkeypatch):
    """The same while decoding a container's audio frames."""
    clips = clips_with_audio(fixture_videos)
    if not clips:
        pytest.skip(f"no clip in {fixture_videos} has an audio stream")
    monkeypatch.setattr(audio_read, "RESAMPLE_BLOCK", 4000)
    samples, rate, start = read_audio_timed(clips[0])
    at_16k, rate_16k, start_16k = read_audio_timed(clips[0], rate=16000)
    assert rate_16k == 16000 and start_16k == start and rate != 16000
    np.testing.assert_array_equal(at_16k, resample(samples, rate, 16000))


def test_read_real_videos_with_audio(fixture_videos):
    clips = clips_with_audio(fixture_videos)
    if not clips:
        pytest.skip(f"no clip in {fixture_videos} has an audio stream")
    for path in clips:
        samples, rate, start = read_audio_timed(path)
        with av.open(str(path)) as container:
            stream, video = container.streams.audio[0], container.streams.video[0]
            duration = float(stream.duration * stream.time_base)
            expected_start = float(stream.start_time * stream.time_base - video.start_time * video.time_base)
            assert rate == stream.codec_context.sample_rate, path
        assert samples.ndim == 1 and samples.dtype == np.float32 and np.abs(samples).max() <= 1.0
        assert abs(len(samples) / rate - duration) < 0.05, path
        assert abs(start - expected_start) < 0.05, path
    if (fixture_videos / "face_noface.mov") in clips:  # its audio starts 2.43 s into the video
        assert read_audio_timed(fixture_videos / "face_noface.mov")[2] == pytest.approx(2.43, abs=0.01)


def test_read_generated_mp4_with_aac(tmp_path):
    path = make_clip(tmp_path / "tone.mp4", seconds=2.0, rate=22050)
    samples, rate, start = read_audio_timed(path)
    assert rate == 22050 and start == 0.0
    assert abs(len(samples) / rate - 2.0) < 2048 / rate  # AAC pads its last 1024-sample frame
    # the tone comes back in place: the encoder's priming samples are dropped by the decoder
    # (RMS error 0.003; one sample of lag would make it 0.026)
    error = samples[100:20000] - tone(2.0, rate, 440.0, 0.3)[100:20000]
    assert np.sqrt(np.mean(error**2)) < 0.01


def test_read_errors_name_the_file(tmp_path):
    silent = make_clip(tmp_path / "silent.mp4", seconds=0.4, audio=False)
    with pytest.raises(AudioError, match=r"silent\.mp4.*no audio stream"):
        read_audio(silent)
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        read_audio(tmp_path / "absent.mp4")
    for name in ("garbage.mp4", "garbage.wav"):
        (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(4096))
        with pytest.raises(AudioError, match=name):
            read_audio(tmp_path / name)


# ---- VGGish -----------------------------------------------------------------------------------------------


def test_vggish_runs_on_real_audio_with_loaded_weights(random_vggish, real_audio):
    path, reference = random_vggish
    model = load_vggish(path)
    samples, rate, _ = real_audio
    examples = vggish_examples(pad_to_example(log_mel(samples, rate)[0]))
    embeddings = vggish_embed(model, examples, batch_size=3)
    assert embeddings.shape == (len(examples), 128) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all() and embeddings.std() > 0
    with torch.no_grad():  # the loaded weights are the saved ones
        expected = reference.eval()(torch.from_numpy(examples)).numpy()
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)


def test_vggish_weights_errors(tmp_path):
    for missing in (tmp_path / "vggish-10086976.pth", "", None):
        with pytest.raises(FileNotFoundError, match=r"audio\.vggish_weights.*vggish-10086976\.pth"):
            load_vggish(missing)
    wrong = {"features.0.weight": torch.zeros(64, 1, 3, 3), "features.99.weight": torch.zeros(3)}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"wrong\.pth.*unknown key\(s\) \['features\.99\.weight'\].*missing"):
        load_vggish(tmp_path / "wrong.pth")
    torch.save({"embeddings.4.bias": torch.zeros(64)}, tmp_path / "shaped.pth")
    with pytest.raises(ValueError, match=r"embeddings\.4\.bias \[64\] \(expected \[128\]\)"):
        load_vggish(tmp_path / "shaped.pth")
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "wrapped.pth")  # wrappers are unwrapped
    assert list(load_state_dict_file(tmp_path / "wrapped.pth")) == ["a"]


def test_vggish_pca_matches_numpy(random_vggish, real_audio, tmp_path):
    path, reference = random_vggish
    samples, rate, _ = real_audio
    examples = vggish_examples(pad_to_example(log_mel(samples, rate)[0]), hop_seconds=0.48)
    raw = vggish_embed(reference, examples).astype(np.float64)  # [E, 128], the saved weights
    rng = np.random.default_rng(1)
    vectors = np.linalg.qr(rng.normal(size=(128, 128)))[0] * 4 / raw.std()  # past [-2, 2]: some clipped
    means = raw.mean(axis=0) + rng.normal(scale=raw.std() / 4, size=128)
    pca_path = tmp_path / "vggish_pca_params.pth"
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means.reshape(-1, 1)}, pca_path)  # numpy arrays
    model = load_vggish(path, pca_path)
    got = vggish_embed(model, examples)
    expected = np.round((np.clip((raw - means) @ vectors.T, -2.0, 2.0) + 2.0) * (255.0 / 4.0))
    assert (expected == 0).any() and (expected == 255).any() and len(np.unique(expected)) > 50
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0  # float32 vs float64 may round a .5 the other way
    assert np.mean(got == expected) > 0.99
    assert vggish_embed(model, examples[:1]).shape == (1, 128)  # torchvggish squeezes a batch of one
    # the TF release's .npz form gives the same parameters
    np.savez(tmp_path / "pca.npz", pca_eigen_vectors=vectors, pca_means=means)
    for got_npz, got_pth in zip(load_pca(tmp_path / "pca.npz"), load_pca(pca_path), strict=True):
        np.testing.assert_array_equal(got_npz, got_pth)


def test_vggish_frame_features_take_the_nearest_example(random_vggish, real_audio):
    path, _ = random_vggish
    samples, rate, _ = real_audio
    extractor = make_extractor("vggish", weights=path, hop_seconds=0.48)
    examples = vggish_examples(pad_to_example(log_mel(samples, rate)[0]), hop_seconds=0.48)
    embeddings = vggish_embed(extractor.model, examples)
    centres = example_centres(len(examples), 0.48)
    times = np.concatenate([centres + 0.1, [len(samples) / rate + 1.0]])  # last: past the audio's end
    features, covered = frame_audio_features(extractor, samples, rate, times)
    assert features.shape == (len(times), AUDIO_FEATURES["vggish"].dim) == (len(times), 128)
    np.testing.assert_allclose(features[:-1], embeddings, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features[-1], embeddings[-1], rtol=1e-5, atol=1e-6)
    assert covered[:-1].all() and not covered[-1]


# ---- per-frame features -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "rate"), [(25, 16000), (30, 44100)])
def test_logmel_stats_follow_a_tone_onset(fps, rate):
    x = tone(3.0, rate, 1000.0, 0.5, onset=1.0)  # silence, then a tone from 1.0 s to the 3.0 s end
    times = np.arange(4 * fps) / fps  # the video runs one second past the audio
    for start in (0.0, 0.5):  # audio sample 0 at 0.0 s, or 0.5 s into the video
        features, covered = frame_audio_features("logmel_stats", x, rate, times, start=start)
        assert features.shape == (len(times), AUDIO_FEATURES["logmel_stats"].dim) == (len(times), 130)
        loudness = features[:, 128]
        before, after = times < start + 0.5, (times > start + 1.5) & (times < start + 2.5)
        np.testing.assert_allclose(loudness[before], -100.0)  # digital silence: the floor
        np.testing.assert_allclose(loudness[after], 10 * np.log10(0.125), atol=0.1)  # a 0.5 sine: -9 dB
        # half the 0.96 s window holds the tone (3 dB under full) at the onset, to within a frame
        onset = times[np.argmax(loudness >= 10 * np.log10(0.125) - 3.0103)]
        assert start + 1.0 - 0.011 <= onset <= start + 1.0 + 1 / fps + 0.011
        band = int(np.argmax(features[after, :64].mean(axis=0)))
        assert 900 < band_centres()[band] < 1100
        assert (features[after, band] > features[before, band].max() + 5).all()
        assert features[after, 129] == pytest.approx(1.0, abs=0.1)  # centroid of a 1 kHz tone, in kHz
        np.testing.assert_array_equal(covered, (times >= start) & (times < start + 3.0))
        # frames past the end take the last complete window
        past = features[times >= start + 3.0]
        assert len(past) and (past == features[covered][-1]).all()


def test_logmel_stats_in_blocks_equal_one_pass_over_the_whole_audio(monkeypatch):
    """Window statistics and frame power are computed in blocks (memory flat on long audio); tiny blocks
    must give what one block over everything gives, to float rounding."""
    rng = np.random.default_rng(3)
    rate = 16000
    x = (0.3 * rng.standard_normal(rate * 7)).astype(np.float32) * np.repeat(rng.random(7), rate)
    times = np.arange(7 * 25) / 25
    whole = frame_audio_features("logmel_stats", x, rate, times)[0]
    monkeypatch.setattr(audio_features, "STATS_BLOCK", 7)  # 25 blocks, windows crossing their edges
    monkeypatch.setattr(audio_features, "BLOCK_FRAMES", 33)  # frame power in 22 blocks
    blocked = frame_audio_features("logmel_stats", x, rate, times)[0]
    np.testing.assert_allclose(blocked, whole, rtol=1e-5, atol=1e-4)
    assert np.ptp(whole[:, 128]) > 5  # the loudness does change along the clip


def test_audio_shorter_than_one_stft_window_is_not_covered():
    features, covered = frame_audio_features(
        "logmel_stats", np.zeros(100, np.float32), 16000, np.arange(5) / 25
    )
    assert features.shape == (5, 130) and not features.any() and not covered.any()
    for n, rate in [(100, 16000), (399, 16000), (400, 16000), (1102, 44100), (1103, 44100), (4321, 48000)]:
        assert n_log_mel_frames(n, rate) == len(log_mel(np.zeros(n, np.float32), rate)[0]), (n, rate)
    with pytest.raises(ValueError, match="unknown audio features 'mfcc'"):
        frame_audio_features("mfcc", np.zeros(100, np.float32), 16000, np.arange(5) / 25)


def test_clip_vector_means_the_covered_frames():
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(clip_vector(features), features.mean(axis=0))
    np.testing.assert_allclose(clip_vector(features, np.array([True, False, True, False])), [3, 4, 5])
    np.testing.assert_array_equal(clip_vector(features, np.zeros(4, bool)), np.zeros(3))


# ---- Parquet cache ----------------------------------------------------------------------------------------


def test_audio_table_round_trip_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 130)).astype(np.float32)
    covered = np.array([True, True, True, True, False, False])
    path = tmp_path / "video.parquet"
    write_audio_table(path, np.arange(6), features, covered, "logmel_stats")
    got, got_covered = read_audio_table(path, extractor="logmel_stats")
    np.testing.assert_array_equal(got, features)
    np.testing.assert_array_equal(got_covered, covered)
    assert audio_table_extractor(path) == "logmel_stats"
    assert not list(tmp_path.glob(".*"))  # no staging leftovers
    with pytest.raises(AudioTableError, match=r"video\.parquet.*'logmel_stats', expected 'vggish'"):
        read_audio_table(path, extractor="vggish")

    gap = tmp_path / "gap.parquet"
    write_audio_table(gap, np.array([0, 1, 3, 4, 5, 6]), features, covered, "logmel_stats")
    with pytest.raises(AudioTableError, match=r"gap\.parquet.*row 2 holds frame 3"):
        read_audio_table(gap)
    nan = tmp_path / "nan.parquet"
    broken = features.copy()
    broken[4, 7] = np.nan
    write_audio_table(nan, np.arange(6), broken, covered, "logmel_stats")
    with pytest.raises(AudioTableError, match=r"nan\.parquet: frame 4: embedding\[7\] = nan"):
        read_audio_table(nan)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(AudioTableError, match=r"junk\.parquet"):
        read_audio_table(tmp_path / "junk.parquet")
