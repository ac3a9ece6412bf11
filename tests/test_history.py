"""The picture history: numbered copies, an index that matches the disk, bounded retention."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from autofit_jaxviz.history import (
    INDEX_NAME,
    PictureHistory,
    history_folder,
    read_index,
    read_status,
)
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.retention import Retention, kept, spaced_numbers


def png(tag: int) -> bytes:
    """A small distinct 'picture' (the history copies bytes; it never decodes them)."""
    return b"\x89PNG\r\n\x1a\n" + tag.to_bytes(4, "big") * 64


def pictures_on_disk(folder):
    return sorted(p.name for p in folder.glob("*.png"))


def test_each_picture_is_copied_with_its_index_line(tmp_path):
    image = tmp_path / "fit.png"
    history = PictureHistory(history_folder(image), name="gauss", names=["a", "b"])
    for i in range(3):
        image.write_bytes(png(i))
        assert history.record(image, BestFit(-10.0 + i, np.array([i, 2.0 * i]), 7 * i)) == i + 1
    folder = tmp_path / "fit_history"
    entries = read_index(folder)
    assert [e["n"] for e in entries] == [1, 2, 3]
    assert [e["step"] for e in entries] == [0, 7, 14]
    assert [e["log_likelihood"] for e in entries] == [-10.0, -9.0, -8.0]
    assert entries[2]["parameters"] == [2.0, 4.0]
    # the copy is the picture as it was, not fit.png as it is now
    assert (folder / entries[0]["file"]).read_bytes() == png(0)
    status = read_status(folder)
    assert status["state"] == "running" and status["latest"] == 3
    assert status["best_log_likelihood"] == -8.0 and status["parameter_names"] == ["a", "b"]
    history.finish("failed", "ValueError: boom")
    assert read_status(folder)["state"] == "failed"
    assert read_status(folder)["error"] == "ValueError: boom"


def test_retention_keeps_disk_bounded_over_1000_pictures_and_index_matches(tmp_path):
    history = PictureHistory(tmp_path / "fit_history", name="long",
                             retention=Retention(keep_recent=50, keep_ratio=1.25))
    for i in range(1000):
        history.record(png(i), BestFit(float(i), np.zeros(2), i))
    folder = tmp_path / "fit_history"
    entries = read_index(folder)
    on_disk = pictures_on_disk(folder)
    assert sorted(e["file"] for e in entries) == on_disk  # no orphan, no missing file
    numbers = [e["n"] for e in entries]
    assert numbers[-50:] == list(range(951, 1001))  # the newest 50
    assert 1 in numbers and 2 in numbers  # the early ones survive
    assert len(on_disk) < 100
    # each kept picture still holds its own bytes
    assert all((folder / e["file"]).read_bytes() == png(e["n"] - 1) for e in entries)


def test_the_retention_rule_never_needs_a_dropped_picture_back():
    ratio = 1.5
    before = set(kept(range(1, 301), keep_recent=10, keep_ratio=ratio))
    after = set(kept(range(1, 601), keep_recent=10, keep_ratio=ratio))
    # everything kept later that was already numbered then had been kept then
    assert {n for n in after if n <= 300} <= before
    assert spaced_numbers(2.0, 20) == {1, 2, 4, 8, 16}


def test_a_resumed_fit_continues_its_history(tmp_path):
    folder = tmp_path / "fit_history"
    first = PictureHistory(folder, name="fit")
    first.record(png(1), BestFit(1.0, np.zeros(1), 1))
    first.record(png(2), BestFit(2.0, np.zeros(1), 2))
    first.finish()  # the process that ran it is gone (or done with it)
    started = read_status(folder)["started"]
    resumed = PictureHistory(folder, name="fit")  # the same output folder after a restart
    assert resumed.record(png(3), BestFit(3.0, np.zeros(1), 1)) == 3
    assert [e["n"] for e in read_index(folder)] == [1, 2, 3]
    status = read_status(folder)
    assert status["runs"] == 2 and status["started"] == started and status["state"] == "running"


def test_a_torn_index_line_is_skipped_not_fatal(tmp_path):
    folder = tmp_path / "fit_history"
    history = PictureHistory(folder, name="fit")
    history.record(png(1), BestFit(1.0, np.zeros(1), 1))
    with open(folder / INDEX_NAME, "a") as f:
        f.write('{"n": 2, "file": "0000')  # a disk that filled up mid-line
    assert [e["n"] for e in read_index(folder)] == [1]


def test_json_has_no_infinity(tmp_path):
    history = PictureHistory(tmp_path / "h", name="fit")
    history.record(png(1), BestFit(-np.inf, np.array([np.nan, 1.0]), 0))
    line = (tmp_path / "h" / INDEX_NAME).read_text()
    entry = json.loads(line)  # strict JSON readers (browsers) can read it
    assert entry["log_likelihood"] is None and entry["parameters"] == [None, 1.0]
    assert "Infinity" not in line and "NaN" not in line


def test_a_history_that_cannot_be_written_is_logged_once_and_the_fit_goes_on(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the history folder should be")
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.history"):
        history = PictureHistory(blocker, name="fit")
        assert history.record(png(1), BestFit(1.0, np.zeros(1), 1)) is None
        assert history.record(png(2), BestFit(2.0, np.zeros(1), 2)) is None
    warnings = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert len(warnings) == 1  # once, at the start: not once per picture
    assert str(blocker) in warnings[0].getMessage()


def test_only_png_pictures_are_kept(tmp_path, caplog):
    history = PictureHistory(tmp_path / "h", name="fit")
    with caplog.at_level(logging.INFO, logger="autofit_jaxviz.history"):
        assert history.record(os.devnull, BestFit(1.0, np.zeros(1), 1)) is None  # a no-op draw
        assert history.record(b"GIF89a...", BestFit(2.0, np.zeros(1), 2)) is None
    assert read_index(tmp_path / "h") == [] and not list((tmp_path / "h").glob("*.png"))
    assert sum("is not a PNG" in r.getMessage() for r in caplog.records) == 1
    assert history.record(png(3), BestFit(3.0, np.zeros(1), 3)) == 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "50"])
def test_bad_keep_recent_is_named(bad):
    with pytest.raises(ValueError, match=f"keep_recent must be an integer >= 1.*{bad!r}"):
        Retention(keep_recent=bad)


@pytest.mark.parametrize("bad", [1, 0.5, float("inf"), False])
def test_bad_keep_ratio_is_named(bad):
    with pytest.raises(ValueError, match="keep_ratio must be a finite number > 1"):
        Retention(keep_ratio=bad)


def test_a_corrupt_history_folder_never_stops_the_fit(tmp_path):
    folder = tmp_path / "fit_history"
    folder.mkdir()
    (folder / INDEX_NAME).write_bytes(b"\xff\xfe\x00 not utf-8\n{\"n\": \"2\"}\n")
    (folder / "status.json").write_text('{"runs": null, "started": "yesterday", '
                                        '"best_log_likelihood": NaN, "parameter_names": 3}')
    history = PictureHistory(folder, name="fit")  # nothing raised
    assert history.record(png(1), BestFit(1.0, np.zeros(1), 1)) == 1
    status = read_status(folder)
    assert status["runs"] == 1 and isinstance(status["started"], float)
    assert status["best_log_likelihood"] == 1.0 and status["parameter_names"] is None


def test_a_lost_index_never_reuses_a_number_and_orphans_are_cleared(tmp_path):
    folder = tmp_path / "fit_history"
    first = PictureHistory(folder, name="fit")
    for i in range(3):
        first.record(png(i), BestFit(float(i), np.zeros(1), i))
    first.finish()
    (folder / INDEX_NAME).unlink()  # a power cut took the index
    (folder / ".000009.png.abc.tmp").write_bytes(b"half")  # a killed write
    resumed = PictureHistory(folder, name="fit")
    # a browser caches pictures by number: 1-3 are never reused for other pictures
    assert resumed.record(png(7), BestFit(7.0, np.zeros(1), 7)) == 4
    assert [e["n"] for e in read_index(folder)] == [4]
    assert sorted(p.name for p in folder.iterdir()) == [
        ".writer.lock", "000004.png", INDEX_NAME, "status.json"]


def test_one_writer_per_history_folder(tmp_path, caplog):
    folder = tmp_path / "fit_history"
    first = PictureHistory(folder, name="first")
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.history"):
        second = PictureHistory(folder, name="second")  # the same output folder, at once
    assert any("another writer" in r.getMessage() for r in caplog.records)
    assert second.record(png(9), BestFit(9.0, np.zeros(1), 9)) is None
    assert first.record(png(1), BestFit(1.0, np.zeros(1), 1)) == 1
    assert read_status(folder)["name"] == "first"
    first.finish()
    # after its end the result's picture still goes in (the lock is taken back a moment)
    assert first.record(png(2), BestFit(2.0, np.zeros(1), 2), final=True) == 2
    third = PictureHistory(folder, name="third")  # a later fit on the folder continues it
    assert third.record(png(3), BestFit(3.0, np.zeros(1), 3)) == 3


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # os.fork with JAX's threads around
def test_the_lock_is_freed_at_finish_even_with_a_forked_child_alive(tmp_path):
    import signal

    folder = tmp_path / "fit_history"
    first = PictureHistory(folder, name="first")
    child = os.fork()  # an autofit pool worker: it holds a copy of the lock's descriptor
    if child == 0:
        signal.pause()
        os._exit(0)
    try:
        first.finish()
        second = PictureHistory(folder, name="second")  # the next fit on the folder
        assert second.enabled and second.record(png(1), BestFit(1.0, np.zeros(1), 1)) == 1
        # the first cannot take it back while the second holds it: no overwritten picture
        assert first.record(png(2), BestFit(2.0, np.zeros(1), 2), final=True) is None
        second.finish()
        # nor after: the second has written the folder since
        assert first.record(png(3), BestFit(3.0, np.zeros(1), 3), final=True) is None
        assert [e["n"] for e in read_index(folder)] == [1]
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_file_system_without_locks_still_gets_a_history(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(*args):  # Lustre mounted without flock answers ENOLCK
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.history"):
        history = PictureHistory(tmp_path / "fit_history", name="fit")
        assert history.record(png(1), BestFit(1.0, np.zeros(1), 1)) == 1
        history.finish()
        assert history.record(png(2), BestFit(2.0, np.zeros(1), 2), final=True) == 2
    assert sum("without a lock" in r.getMessage() for r in caplog.records) == 1


def test_nan_in_an_old_index_never_stops_the_history(tmp_path):
    folder = tmp_path / "fit_history"
    folder.mkdir()
    (folder / "000001.png").write_bytes(png(1))
    (folder / INDEX_NAME).write_text('{"n": 1, "file": "000001.png", "log_likelihood": NaN}\n'
                                     + "[" * 100000 + "\n")
    (folder / "status.json").write_text("[" * 100000)
    with open(folder / INDEX_NAME, "a") as f:
        f.write('{"n": 1, "file": "000001.png", "log_likelihood": 1e400}\n')  # inf, once read
    history = PictureHistory(folder, name="fit")
    assert history.record(png(2), BestFit(2.0, np.zeros(1), 2)) == 2
    assert [e["n"] for e in read_index(folder)] == [2]
    assert read_status(folder)["latest"] == 2


def test_spaced_numbers_stay_few_for_a_ratio_close_to_one():
    numbers = spaced_numbers(1.000001, 1000)
    assert numbers == set(range(1, 1001))  # every one, found in one pass per number
    assert len(spaced_numbers(1.25, 10**6)) < 80
