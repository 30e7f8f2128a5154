"""Text embeddings of transcripts with the real all-MiniLM-L6-v2 (loaded once for the module)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.text import embed
from pipeline.text.embed import (
    MINILM_DIM,
    TranscriptError,
    Utterance,
    embed_texts,
    parse_utterances,
    read_text_table,
    read_transcript,
    read_utterances,
    table_embeddings,
    table_utterances,
    table_video_vector,
    transcript_vectors,
    utterance_frames,
    write_text_table,
)

# Tiny batches: one thread is as fast, and far faster than two on a busy shared 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def network_attempts():
    """Load the packaged model once, with every socket connection and DNS lookup refused and recorded."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] or args)
        raise OSError("network disabled in this test")

    embed.clear_model_cache()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        embed.load_model("", device="cpu")
        embed_texts(["warm up"], device="cpu")
    return attempts


@pytest.fixture(scope="module")
def encode(network_attempts):
    return lambda texts, **kw: embed_texts(texts, device="cpu", **kw)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_model_loads_without_network(network_attempts):
    assert network_attempts == []


def test_semantic_sanity(encode):
    happy, joyful, invoice = encode(["I am so happy today", "What a joyful day", "The invoice is overdue"])
    assert cosine(happy, joyful) > cosine(happy, invoice) + 0.3


def test_shape_dtype_and_unit_norm(encode):
    vectors = encode(["one", "two words", "a somewhat longer third sentence, with a comma"])
    assert vectors.shape == (3, MINILM_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_deterministic_and_batch_independent(encode):
    texts = ["I cannot believe they cancelled it again.", "Let me tell you about the train ride.", "No way!"]
    first, second = encode(texts), encode(texts)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(encode(texts, batch_size=1), first, atol=1e-5)


def test_model_is_cached(encode):
    assert embed.load_model("", device="cpu") is embed.load_model("", device="cpu")


def test_empty_string_and_empty_list(encode):
    vectors = encode(["", "hello"])
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)
    assert encode([]).shape == (0, MINILM_DIM)


def test_non_string_rejected(encode):
    with pytest.raises(TypeError, match="item 1"):
        encode(["fine", None])


def test_missing_model_folder_names_it_and_the_params_key(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model") as error:
        embed_texts(["x"], model_path=missing)
    assert "text.model" in str(error.value)


def test_user_model_folder(encode, tmp_path):
    """Another folder holding a sentence-transformers model (here: links to the packaged files) loads too."""
    folder = tmp_path / "my-model"
    for source in embed.packaged_model_path().rglob("*"):
        target = folder / source.relative_to(embed.packaged_model_path())
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    texts = ["What a joyful day"]
    try:
        np.testing.assert_allclose(
            embed_texts(texts, model_path=str(folder), device="cpu"), encode(texts), atol=1e-6
        )
        assert (str(folder.resolve()), "cpu") in embed._MODELS
    finally:
        embed._MODELS.pop((str(folder.resolve()), "cpu"), None)


# ------------------------------------------------------------------------------------------ parsing


def write(tmp_path: Path, text: str, name: str = "video.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_plain_transcript(tmp_path):
    path = write(tmp_path, "Wait, what? You bought the tickets?\n\nNo way.\n")
    assert read_utterances(path) == [
        Utterance(None, None, "Wait, what? You bought the tickets?"),
        Utterance(None, None, "No way."),
    ]
    assert read_transcript(path) == "Wait, what? You bought the tickets? No way."


def test_demo_corpus_transcripts_are_plain():
    folder = Path(__file__).resolve().parents[2] / "data" / "demo" / "transcripts"
    files = sorted(folder.glob("*.txt"))[:3]
    if not files:
        pytest.skip(f"{folder} holds no transcripts (run the demo stage)")
    for path in files:
        utterances = read_utterances(path)
        assert len(utterances) == 1 and utterances[0].start is None
        assert read_transcript(path) == path.read_text().strip()


def test_timed_transcript(tmp_path):
    path = write(tmp_path, "0,1.5,Hello, there.\n1.5, 3 ,  Second line  \n\n4.25,,open ended\n")
    assert read_utterances(path) == [
        Utterance(0.0, 1.5, "Hello, there."),
        Utterance(1.5, 3.0, "Second line"),
        Utterance(4.25, None, "open ended"),
    ]
    assert read_transcript(path) == "Hello, there. Second line open ended"


def test_empty_transcript(tmp_path):
    assert read_utterances(write(tmp_path, "")) == []
    assert read_transcript(write(tmp_path, "\n  \n")) == ""


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("0,1,a\n1,2,b\njust words\n", 3, "no `start,end,` times"),
        ("0,1,a\n\n1,x,b\n", 3, "bad times"),
        ("0,1,a\n2,1,b\n", 2, "before start"),
        ("-1,1,a\n", 1, "start time"),
        ("0,1,a\n1,inf,b\n", 2, "bad times"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text, "clip.txt")
    with pytest.raises(TranscriptError, match=message) as error:
        read_utterances(path)
    assert f"clip.txt, line {line}:" in str(error.value)


@pytest.mark.parametrize("fps", [25, 30])
def test_utterance_frames(fps):
    utterances = parse_utterances("0,1,a\n1.5,,b\n3,4,c\n")
    times = np.arange(5 * fps) / fps  # 5 s of frames: k / fps
    expected = np.full(len(times), -1)
    expected[: fps * 1] = 0  # [0, 1)
    expected[int(np.ceil(1.5 * fps)) : 3 * fps] = 1  # [1.5, 3): open end runs to the next start
    expected[3 * fps : 4 * fps] = 2  # [3, 4)
    np.testing.assert_array_equal(utterance_frames(utterances, times), expected)


def test_utterance_frames_overlap_and_untimed():
    utterances = [Utterance(0.0, 10.0, "long"), Utterance(2.0, 3.0, "short"), Utterance(None, None, "x")]
    times = np.array([1.0, 2.0, 2.96, 3.0, 9.0, 10.0])
    np.testing.assert_array_equal(utterance_frames(utterances, times), [0, 1, 1, 0, 0, -1])
    assert (utterance_frames(parse_utterances("plain line"), times) == -1).all()
    assert utterance_frames([], times).tolist() == [-1] * len(times)


# ------------------------------------------------------------------------------------------ vectors


def test_transcript_vectors_timed(encode, tmp_path):
    path = write(tmp_path, "0,1,I am so happy today\n2,3,The invoice is overdue\n")
    fps = 25
    result = transcript_vectors(path, np.arange(4 * fps) / fps, device="cpu")
    expected = encode(["I am so happy today", "The invoice is overdue"])
    np.testing.assert_allclose(result.embeddings, expected, atol=1e-6)
    np.testing.assert_allclose(result.video, expected.mean(axis=0), atol=1e-6)
    assert result.frames.shape == (4 * fps, MINILM_DIM) and result.frames.dtype == np.float32
    np.testing.assert_array_equal(result.frame_mask, (result.frame_utterance >= 0))
    assert result.frame_mask.sum() == 2 * fps
    np.testing.assert_allclose(result.frames[10], expected[0], atol=1e-6)
    np.testing.assert_allclose(result.frames[60], expected[1], atol=1e-6)
    assert not result.frames[30].any() and not result.frame_mask[30]

    whole = transcript_vectors(path, np.arange(4 * fps) / fps, granularity="video", device="cpu")
    assert whole.embeddings.shape == (1, MINILM_DIM)
    np.testing.assert_allclose(
        whole.video, encode(["I am so happy today The invoice is overdue"])[0], atol=1e-6
    )
    np.testing.assert_array_equal(whole.frame_mask, result.frame_mask)
    np.testing.assert_allclose(whole.frames[60], whole.video, atol=0)


def test_transcript_vectors_untimed_and_empty(encode, tmp_path):
    plain = write(tmp_path, "No way, I did not expect that at all.\n", "plain.txt")
    result = transcript_vectors(plain, np.arange(30) / 30, device="cpu")
    assert result.frame_mask.all()
    np.testing.assert_allclose(result.frames, np.broadcast_to(result.video, (30, MINILM_DIM)), atol=0)
    assert not transcript_vectors(
        plain, np.arange(30) / 30, spread_untimed=False, device="cpu"
    ).frame_mask.any()

    empty = transcript_vectors(write(tmp_path, "", "empty.txt"), np.arange(25) / 25, device="cpu")
    np.testing.assert_allclose(empty.video, encode([""])[0], atol=1e-6)
    assert empty.utterances == [Utterance(None, None, "")]
    assert not empty.frame_mask.any() and not empty.frames.any()
    assert transcript_vectors(plain, device="cpu").frames is None


def test_parquet_round_trip(encode, tmp_path):
    utterances = [
        Utterance(0.0, 1.5, "Hello, there."),
        Utterance(1.5, None, "open"),
        Utterance(None, None, ""),
    ]
    vectors = encode([u.text for u in utterances])
    path = write_text_table(tmp_path / "text" / "video.parquet", utterances, vectors)
    table = read_text_table(path)
    assert table.schema["embedding"] == pl.Array(pl.Float32, MINILM_DIM)
    assert table_utterances(table) == utterances
    np.testing.assert_array_equal(table_embeddings(table), vectors)
    np.testing.assert_allclose(table_video_vector(table), vectors.mean(axis=0), atol=1e-7)
    assert not list(path.parent.glob(".*partial"))


def test_parquet_shape_mismatch_rejected(tmp_path):
    with pytest.raises(ValueError, match="U=2"):
        write_text_table(tmp_path / "x.parquet", [Utterance(None, None, "a")] * 2, np.zeros((1, 4)))
