"""Crash safety of the faces stage, with real processes: a SIGKILLed stage leaves no process behind and
nothing written after its death; a rerun recomputes only the unfinished videos (or those whose key changed),
prunes the rest and ends byte for byte equal to an uninterrupted run."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import artifacts, resume
from pipeline.config import load_config
from pipeline.demo import generate_corpus
from pipeline.faces.process import process_video
from stages import faces, frames
from tests.processes import alive, descendants

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
MARK = "AFFECTFLOW_CRASH_TEST"  # set in the stage's environment, inherited by everything it starts
# 3 one-person videos + 1 two-person video (5 tracks), ~30 frames each: a few seconds of face work each.
CORPUS = dict(
    seed=7,
    n_identities=3,
    videos_per_identity=1,
    two_person_videos=1,
    frames_per_video=30,
    frames_jitter=0.1,
    compound_videos=0,
    mimicry_videos=0,
    workers=1,
    progress=False,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("crash")
    root, frames_dir = base / "demo", base / "frames"
    generate_corpus(root, **CORPUS)
    frames.main(["--root", str(root), "--out", str(frames_dir), "--params", str(PARAMS)])
    return {"base": base, "root": root, "frames": frames_dir}


@pytest.fixture(scope="module")
def reference(corpus, prefect_harness) -> Path:
    """An uninterrupted in-process run (thread runner), the output every other run must equal."""
    out = corpus["base"] / "reference"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFFECTFLOW_TASK_RUNNER", "thread")
        faces.run(corpus["root"], corpus["frames"], out, load_config(PARAMS).faces)
    return out


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (hidden ones included) by relative path, with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def stats(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime_ns) of every file below `folder`."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(folder))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def marked(marker: str) -> set[int]:
    """Living processes whose environment carries `MARK=marker`."""
    needle = f"{MARK}={marker}".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def stage_command(corpus: dict[str, Path], out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stages.faces",
        "--root",
        str(corpus["root"]),
        "--frames",
        str(corpus["frames"]),
        "--out",
        str(out),
        "--params",
        str(PARAMS),
    ]


def stage_env(corpus: dict[str, Path], marker: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AFFECTFLOW_")}
    env.pop("PREFECT_API_URL", None)  # the harness's server: the stage must start (and lose) its own
    env.update(
        {
            "AFFECTFLOW_WORKERS": "2",
            "PREFECT_HOME": str(corpus["base"] / "prefect"),  # its own database: no lock with other runs
            MARK: marker,
        }
    )
    return env


def tracks_by_video(corpus: dict[str, Path]) -> dict[str, list[str]]:
    tracks = pl.read_parquet(artifacts.tracks_table(corpus["frames"]))
    return {row["video"]: row["track"] for row in tracks.group_by("video").agg("track").iter_rows(named=True)}


def done_videos(corpus: dict[str, Path], out: Path) -> list[str]:
    """Videos whose every track has been committed."""
    return sorted(
        video
        for video, tracks in tracks_by_video(corpus).items()
        if all((out / track / resume.UNIT_FILE).is_file() for track in tracks)
    )


def wait_dead(pids: set[int], marker: str, seconds: float) -> set[int]:
    """Waits up to `seconds` for every pid and every marked process to end; returns the survivors."""
    deadline = time.monotonic() + seconds
    while True:
        survivors = {pid for pid in pids if alive(pid)} | marked(marker)
        if not survivors or time.monotonic() > deadline:
            return survivors
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_leaves_nothing_running_and_the_rerun_resumes(corpus, reference, tmp_path: Path) -> None:
    out = tmp_path / "faces"
    env = stage_env(corpus, marker=str(tmp_path))
    log = tmp_path / "killed.log"
    start = time.monotonic()
    with log.open("w") as handle:
        stage = subprocess.Popen(
            stage_command(corpus, out), cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
        started: set[int] = set()  # everything the stage started, seen while it ran
        while not list(out.glob(f"*/{resume.UNIT_FILE}")):
            assert stage.poll() is None, f"the stage ended before a unit was committed:\n{log.read_text()}"
            assert time.monotonic() - start < 240, f"no unit committed in 240 s:\n{log.read_text()}"
            started |= descendants(stage.pid)
            time.sleep(0.05)
        started |= descendants(stage.pid)
        os.kill(stage.pid, signal.SIGKILL)
        stage.wait()
    killed_at = time.monotonic() - start
    assert len(started) >= 3, f"expected a server and two workers, saw {sorted(started)}"

    survivors = wait_dead(started, str(tmp_path), seconds=3.0)
    assert not survivors, f"still running after the stage was killed: {sorted(survivors)}"
    before = stats(out)
    time.sleep(1.0)
    assert stats(out) == before, "files in the output changed after the stage had been killed"

    finished = done_videos(corpus, out)
    n_videos = len(tracks_by_video(corpus))
    assert 1 <= len(finished) < n_videos, f"killed too late: {finished} of {n_videos} videos were done"
    finished_tracks = {track for video in finished for track in tracks_by_video(corpus)[video]}
    units = {name: value for name, value in before.items() if name.split("/")[0] in finished_tracks}

    rerun = subprocess.run(
        stage_command(corpus, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    reused = f"faces: {len(finished)} videos reused, {n_videos - len(finished)} computed"
    assert reused in rerun.stdout, rerun.stdout
    after = stats(out)
    assert {name: after[name] for name in units} == units  # finished units untouched (inode and mtime)
    assert tree(out) == tree(reference)  # no leftovers, same bytes as an uninterrupted run
    print(f"killed after {killed_at:.1f} s with {len(finished)} of {n_videos} videos done; {reused}")


@pytest.mark.slow
def test_changed_param_is_recomputed_and_stale_entries_pruned(
    corpus, reference, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "thread")
    params = load_config(PARAMS).faces
    out = tmp_path / "faces"
    shutil.copytree(reference, out)
    tracks = pl.read_parquet(artifacts.tracks_table(corpus["frames"]))
    video = tracks.filter(pl.col("track").str.ends_with("_left"))["video"][0]  # the two-person video
    row = tracks.filter(pl.col("video") == video)
    video_path, names = corpus["root"] / row["video_path"][0], row["track"].to_list()

    # That video's unit as a run with another crop_size left it: its own key, crops of another size.
    other = dataclasses.replace(faces.face_config(params), crop_size=params.crop_size // 2)
    code = resume.source_fingerprint(*faces.FACE_CODE)
    process_video(
        video_path,
        names,
        other,
        out,
        unit_key=faces.video_key(video_path, other, names, row["n_frames"][0], code),
    )
    assert np.load(out / names[0] / "face.npy", mmap_mode="r").shape[1] == params.crop_size // 2
    # Debris of other runs: a track no longer listed, a killed job's staging folder, a stray file.
    (out / "gone_track").mkdir()
    (out / "gone_track" / resume.UNIT_FILE).write_text('{"key": "x"}\n')
    (out / f".{names[0]}.tmp").mkdir()
    (out / "stray.txt").write_text("x")
    others = set(tracks["track"]) - set(names)
    untouched = {name: value for name, value in stats(out).items() if name.split("/")[0] in others}

    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # a relative output folder, as dvc.yaml gives it
    faces.run(corpus["root"], corpus["frames"], Path(out.name), params)
    printed = capsys.readouterr().out
    n_videos = tracks["video"].n_unique()
    assert f"faces: {n_videos - 1} videos reused, 1 computed" in printed, printed
    assert tree(out) == tree(reference)  # stale entries gone, the changed unit recomputed
    after = stats(out)
    assert {name: after[name] for name in untouched} == untouched  # the up-to-date units were left alone


def test_stage_dies_with_its_parent(tmp_path: Path) -> None:
    """`exit_with_parent` (around every fan-out): the parent is SIGKILLed, the child and its child go."""
    child = (
        "import subprocess, time\n"
        "from pipeline.resume import exit_with_parent\n"
        "with exit_with_parent():\n"
        "    subprocess.Popen(['sleep', '60'])\n"
        "    time.sleep(60)\n"
    )
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    env = dict(os.environ, **{MARK: str(tmp_path)})
    wrapper = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while len(marked(str(tmp_path)) - {wrapper.pid}) < 2:  # the child and its `sleep`
        assert wrapper.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    started = marked(str(tmp_path)) - {wrapper.pid}
    os.kill(wrapper.pid, signal.SIGKILL)
    wrapper.wait()
    survivors = wait_dead(started, str(tmp_path), seconds=3.0)
    assert not survivors, f"still running after their parent was killed: {sorted(survivors)}"


def test_resume_units(tmp_path: Path, monkeypatch) -> None:
    """The library part: keys, commit, is_done, prune, code fingerprints."""
    assert resume.unit_key({"a": 1, "b": [1, 2]}) == resume.unit_key({"b": [1, 2], "a": 1})
    assert resume.unit_key({"a": 1}) != resume.unit_key({"a": 2})

    out = tmp_path / "out"
    staging = resume.fresh_staging(out / "unit")
    assert staging == out / ".unit.tmp" and staging.is_dir()
    (staging / "data.bin").write_bytes(b"1")
    assert not resume.is_done(out / "unit", "k1")
    resume.commit(staging, out / "unit", "k1")
    assert not staging.exists() and (out / "unit" / "data.bin").read_bytes() == b"1"
    assert resume.is_done(out / "unit", "k1", [out / "unit" / "data.bin"])
    assert not resume.is_done(out / "unit", "k2")
    assert not resume.is_done(out / "unit", "k1", [out / "unit" / "missing.bin"])
    # Replacing a committed unit.
    staging = resume.fresh_staging(out / "unit")
    (staging / "other.bin").write_bytes(b"2")
    resume.commit(staging, out / "unit", "k2")
    assert sorted(p.name for p in (out / "unit").iterdir()) == ["other.bin", resume.UNIT_FILE]
    assert resume.read_key(out / "unit") == "k2"

    (out / "stale").mkdir()
    (out / ".killed.tmp").mkdir()
    (out / "keep.txt").write_text("x")
    assert resume.prune(out, {"unit", "keep.txt"}) == [".killed.tmp", "stale"]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "unit"]

    package = tmp_path / "src" / "fingerprinted"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    before = resume.source_fingerprint("fingerprinted")
    assert resume.source_fingerprint("fingerprinted") == before
    (package / "a.py").write_text("X = 2\n")
    assert resume.source_fingerprint("fingerprinted") != before
    assert resume.source_fingerprint("fingerprinted.a") != resume.source_fingerprint("fingerprinted")


@pytest.mark.slow
def test_faces_stage_on_a_dask_cluster_equals_the_reference(
    corpus, reference, tmp_path: Path, monkeypatch
) -> None:
    """The faces stage's jobs through Prefect's Dask task runner, on a real LocalCluster of two worker
    processes (`AFFECTFLOW_TASK_RUNNER=dask`): the same files, byte for byte, as the in-process run."""
    monkeypatch.setenv("AFFECTFLOW_TASK_RUNNER", "dask")
    monkeypatch.setenv("AFFECTFLOW_WORKERS", "2")
    monkeypatch.delenv("AFFECTFLOW_DASK_ADDRESS", raising=False)
    out = tmp_path / "faces"
    faces.run(corpus["root"], corpus["frames"], out, load_config(PARAMS).faces)
    assert tree(out) == tree(reference)
