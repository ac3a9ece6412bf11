"""The live page's server: the fit list, pushed changes, and only files below the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from autofit_jaxviz.history import PictureHistory, read_index
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.viewer.export import export_animation
from autofit_jaxviz.viewer.fits import FitFolders
from tests.viewer_helpers import EventReader, get, get_with_headers, make_fit, real_png, served

FIT = "search/abc/image/fit_history"
#: stands for the absolute path of the history folder beside the served one
OUTSIDE = "/ABSOLUTE"


def test_the_fit_list_index_and_pictures(tmp_path):
    make_fit(tmp_path, "search/abc", 3, name="my search")
    with served(tmp_path) as url:
        status, body = get(url, "/api/fits")
        fits = json.loads(body)["fits"]
        assert status == 200 and [f["id"] for f in fits] == [FIT]
        assert fits[0]["name"] == "my search" and fits[0]["state"] == "running"
        assert fits[0]["pictures"] == 3 and fits[0]["best_log_likelihood"] == -98.0
        status, body = get(url, f"/api/index?fit={quote(FIT)}")
        assert [e["n"] for e in json.loads(body)["entries"]] == [1, 2, 3]
        status, body = get(url, f"/picture?fit={quote(FIT)}&file=000002.png")
        assert status == 200 and body == real_png(61, 1)
        status, body = get(url, "/")
        assert status == 200 and b"EventSource" in body


def test_a_new_picture_and_a_new_fit_are_pushed(tmp_path):
    history = make_fit(tmp_path, "search/abc", 1)
    with served(tmp_path) as url:
        events = EventReader(url)
        try:
            assert [f["latest"] for f in events.next_fits()] == [1]  # on connecting
            history.record(real_png(70, 9), BestFit(5.0, np.zeros(2), 99))
            fits = events.next_fits()
            assert [(f["latest"], f["best_log_likelihood"]) for f in fits] == [(2, 5.0)]
            make_fit(tmp_path, "other/def", 1, name="second")
            while len(fits) < 2:  # the new fit's status, then maybe its first picture
                fits = events.next_fits()
            assert {f["name"] for f in fits} == {"fit", "second"}
            history.finish()
            while next(f for f in fits if f["name"] == "fit")["state"] != "finished":
                fits = events.next_fits()
        finally:
            events.close()


def test_fits_in_new_nested_folders_all_appear(tmp_path):
    """A fit's folders are created a moment before its files: the watch on a new
    folder may come after the files in it, and the page must still list it."""
    (tmp_path / "output").mkdir()
    with served(tmp_path / "output") as url:
        events = EventReader(url)
        # well inside the 60 s full rescan: the folders' own events must find them
        deadline = time.monotonic() + 20
        try:
            assert events.next_fits() == []
            for i in range(50):  # folders and status at once: no later write to notice
                make_fit(tmp_path / "output", f"pipeline/search{i}/deep/er", 0, name=f"s{i}")
            names: set[str] = set()
            while len(names) < 50:
                names = {f["name"] for f in events.next_fits(deadline)}
            assert names == {f"s{i}" for i in range(50)}
        finally:
            events.close()


def test_a_status_file_with_odd_values_never_stops_the_pushes(tmp_path):
    good = make_fit(tmp_path, "search/abc", 1, name="good")
    odd = tmp_path / "odd" / "fit_history"
    odd.mkdir(parents=True)
    (odd / "status.json").write_text(json.dumps({"updated": None, "run_started": "soon",
                                                 "state": 3, "name": ["x"], "pictures": -1,
                                                 "latest_entry": {"n": "1"}}))
    (odd / "index.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
    huge = tmp_path / "huge" / "fit_history"
    huge.mkdir(parents=True)  # an elapsed time that overflows to infinity
    (huge / "status.json").write_text(json.dumps({"state": "finished", "updated": 1e308,
                                                  "run_started": -1e308}))
    with served(tmp_path) as url:
        events = EventReader(url)
        try:
            fits = {f["id"]: f for f in events.next_fits()}
            assert fits["huge/fit_history"]["elapsed"] is None
            assert fits["odd/fit_history"]["name"] == "odd/fit_history"
            assert fits["odd/fit_history"]["state"] == "stopped"
            assert get(url, "/api/index?fit=odd/fit_history") == (200, b'{"entries": [], '
                                                                  b'"parameter_names": null}')
            (odd / "status.json").write_text('{"best_log_likelihood": NaN}')  # not JSON for JS
            good.record(real_png(90, 3), BestFit(1.0, np.zeros(2), 5))
            while True:  # the good fit's next picture still arrives
                fits = {f["id"]: f for f in events.next_fits()}
                if fits[FIT]["latest"] == 2:
                    break
            assert "odd/fit_history" not in fits  # not JSON a browser could read: left out
        finally:
            events.close()


def test_a_fit_whose_process_is_gone_is_shown_stopped(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", "from autofit_jaxviz.history import PictureHistory as H; "
         f"H({str(tmp_path / 'x' / 'fit_history')!r}, name='killed')"], check=True)
    assert child.returncode == 0  # it left 'running' behind, as a SIGKILLed fit would
    folders = FitFolders(tmp_path)
    (fit_id, folder), = folders.scan().items()
    assert folders.summary(fit_id, folder)["state"] == "stopped"


@pytest.mark.parametrize("path", [
    "/picture?fit=..&file=000001.png",
    "/picture?fit=../../..&file=000001.png",
    "/picture?fit=../outside_history&file=000001.png",
    "/picture?fit=%2e%2e%2foutside_history&file=000001.png",
    f"/picture?fit={quote(str(OUTSIDE))}&file=000001.png",
    "/picture?fit=%2e%2e%2f%2e%2e&file=000001.png",
    "/picture?fit=search%2fabc%2fimage%2ffit_history%2f..%2f..&file=000001.png",
    "/picture?fit=%252e%252e&file=000001.png",
    "/picture?fit=/etc&file=passwd",
    f"/picture?fit={quote(FIT)}&file=../../../../secret.png",
    f"/picture?fit={quote(FIT)}&file=..%2f..%2fsecret.png",
    f"/picture?fit={quote(FIT)}&file=index.jsonl",
    f"/picture?fit={quote(FIT)}&file=%2Fetc%2Fpasswd",
    "/picture?fit=search%5C..%5C..&file=000001.png",
    "/picture?fit=outside_history&file=000001.png",
    "/api/index?fit=outside_history",
    "/api/index?fit=%2Ftmp",
])
def test_nothing_outside_the_served_folder_can_be_read(tmp_path, path):
    served_root = tmp_path / "served"
    make_fit(served_root, "search/abc", 1)
    outside = tmp_path / "outside_history"  # a history folder next to, not below, the root
    PictureHistory(outside, name="secret").record(b"\x89PNG secret", BestFit(1.0, np.zeros(1), 1))
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    # links inside the served folder that lead out of it
    (served_root / "outside_history").symlink_to(outside)
    path = path.replace(quote(OUTSIDE), quote(str(outside)))
    with served(served_root) as url:
        status, body = get(url, path)
    assert status == 404, (path, status, body[:100])
    assert b"secret" not in body and b"root:" not in body


def test_a_picture_linked_to_a_file_outside_is_not_served(tmp_path):
    make_fit(tmp_path / "served", "search/abc", 1)
    (tmp_path / "secret.txt").write_text("secret")
    folder = tmp_path / "served" / FIT
    (folder / "000099.png").symlink_to(tmp_path / "secret.txt")
    with served(tmp_path / "served") as url:
        status, body = get(url, f"/picture?fit={quote(FIT)}&file=000099.png")
    assert status == 404 and b"secret" not in body


def test_a_linked_history_folder_is_not_listed(tmp_path):
    outside = tmp_path / "elsewhere" / "fit_history"
    PictureHistory(outside, name="elsewhere")
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "fit_history").symlink_to(outside)
    assert FitFolders(tmp_path / "served").scan() == {}


def test_the_page_is_read_only(tmp_path):
    make_fit(tmp_path, "search/abc", 1)
    with served(tmp_path) as url:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        for method in ("POST", "PUT", "DELETE"):
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            connection.request(method, f"/picture?fit={quote(FIT)}&file=000001.png", body=b"x")
            assert connection.getresponse().status == 405, method
            connection.close()
    assert (tmp_path / FIT / "000001.png").read_bytes() == real_png(60, 0)


def test_a_foreign_host_header_is_refused_on_loopback(tmp_path):
    make_fit(tmp_path, "search/abc", 1)
    with served(tmp_path) as url:
        assert get(url, "/api/fits", headers={"Host": "attacker.example:80"})[0] == 403
        assert get(url, "/api/fits", headers={"Host": "localhost.attacker.example"})[0] == 403
        assert get(url, "/api/fits")[0] == 200
        # an SSH forward from another local port keeps the host name, not the port
        for host in ("localhost:9000", "127.0.0.1:1234", "[::1]:8080", "localhost"):
            assert get(url, "/api/fits", headers={"Host": host})[0] == 200, host


def test_a_token_is_required_when_one_is_set(tmp_path):
    make_fit(tmp_path, "search/abc", 1)
    with served(tmp_path, token="s3cret") as url:
        assert url.endswith("?token=s3cret")
        assert get(url, "/api/fits")[0] == 403
        assert get(url, "/api/fits?token=wrong")[0] == 403
        assert get(url, "/api/fits?token=s3cret")[0] == 200
        import hashlib

        name = f"jaxviz_token_{hashlib.sha256(b's3cret').hexdigest()[:16]}"
        assert get(url, "/api/fits", headers={"Cookie": f"{name}=s3cret"})[0] == 200
        # cookies are shared by every port of a host: another page's is not this one's
        assert get(url, "/api/fits", headers={"Cookie": "jaxviz_token_0123=s3cret"})[0] == 403
        status, _, headers = get_with_headers(url, "/?token=s3cret")
        assert status == 200 and f"{name}=s3cret" in headers.get("Set-Cookie", "")
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert get(url, f"/picture?fit={quote(FIT)}&file=000001.png")[0] == 403


def test_a_missing_picture_is_a_404_not_a_broken_server(tmp_path):
    make_fit(tmp_path, "search/abc", 2)
    (tmp_path / FIT / "000002.png").unlink()  # dropped by retention after it was listed
    (tmp_path / FIT / "status.json").write_text('{"state": "runn')  # torn by a foreign writer
    with served(tmp_path) as url:
        assert get(url, f"/picture?fit={quote(FIT)}&file=000002.png")[0] == 404
        assert get(url, f"/picture?fit={quote(FIT)}&file=000001.png")[0] == 200
        assert get(url, "/api/fits")[0] == 200


def test_the_cli_refuses_a_remote_bind_without_the_flag(tmp_path):
    result = subprocess.run([sys.executable, "-m", "autofit_jaxviz", "view", str(tmp_path),
                             "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr and "0.0.0.0" in result.stderr
    missing = subprocess.run([sys.executable, "-m", "autofit_jaxviz", "view",
                              str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_a_remote_bind_gets_a_random_token(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "autofit_jaxviz", "view", str(tmp_path), "--host", "0.0.0.0",
         "--allow-remote", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "?token=" in line, line
        url = line.rsplit(" at ", 1)[1].strip()
        token = url.split("?token=")[1]
        assert len(token) >= 24
        assert get(url, "/api/fits")[0] == 403
        assert get(url, f"/api/fits?token={token}")[0] == 200
    finally:
        process.terminate()
        assert process.wait(30) == 0  # SIGTERM: a clean stop


def test_export_writes_one_frame_per_kept_picture(tmp_path):
    history = make_fit(tmp_path, "search/abc", 7)
    history.finish()
    target = tmp_path / "film.gif"
    result = subprocess.run([sys.executable, "-m", "autofit_jaxviz", "view", str(tmp_path),
                             "--export", str(target)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    with Image.open(target) as film:
        assert film.format == "GIF" and film.n_frames == len(read_index(tmp_path / FIT)) == 7
        sizes = set()
        for frame in range(film.n_frames):
            film.seek(frame)
            sizes.add(film.size)
        assert sizes == {(66, 40 + 28)}  # the widest picture, plus the caption band


def test_export_refuses_another_format_and_an_empty_history(tmp_path):
    make_fit(tmp_path, "search/abc", 0)
    with pytest.raises(ValueError, match=r"'.*film.mp4'.*\.gif"):
        export_animation(tmp_path / FIT, tmp_path / "film.mp4")
    with pytest.raises(ValueError, match="no picture to export"):
        export_animation(tmp_path / FIT, tmp_path / "film.gif")


@pytest.mark.slow
def test_a_fit_with_viewer_on_starts_the_page_once_and_it_ends_with_the_fit(tmp_path):
    from pathlib import Path

    output = tmp_path / "output"
    script = Path(__file__).resolve().parent / "viewer_fit.py"
    fit = subprocess.Popen([sys.executable, str(script), str(output), "with_page", "viewer",
                            "twice"],
                           stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "MPLBACKEND": "Agg"})
    try:
        lines = []
        for line in fit.stdout:
            lines.append(line)
            if "live page at http" in line:
                break
        url = lines[-1].split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and "ssh -N -L" in lines[-1]
        fits = json.loads(get(url, "/api/fits")[1])["fits"]
        assert [f["name"] for f in fits] == ["with_page"]  # listed from the fit's start
        while len(fits) < 2:  # the second search of the pipeline joins the same page
            fits = json.loads(get(url, "/api/fits")[1])["fits"]
            assert fit.poll() is None, "the pipeline ended before its second search was listed"
            time.sleep(0.1)
        assert {f["name"] for f in fits} == {"with_page", "with_page_2"}
        lines += fit.stdout.readlines()
        assert fit.wait(300) == 0
    finally:
        if fit.poll() is None:
            fit.kill()
    assert sum("live page at" in line for line in lines) == 1  # once for the two searches
    # the page stops with the process that started it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            get(url, "/api/fits")
        except ConnectionRefusedError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the page at {url} outlived the fit")


@pytest.mark.slow
def test_the_history_survives_a_fit_killed_and_resumed(tmp_path):
    import signal
    from pathlib import Path

    from autofit_jaxviz.history import read_status

    output = tmp_path / "output"
    script = Path(__file__).resolve().parent / "viewer_fit.py"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    first = subprocess.Popen([sys.executable, str(script), str(output), "resumed"], env=env)
    try:
        deadline = time.monotonic() + 240
        while len(_history_entries(output)) < 3:
            assert first.poll() is None, "the fit ended before it could be killed"
            assert time.monotonic() < deadline, "no three pictures in time"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    before = _history_entries(output)
    folder = next(output.rglob("fit_history"))
    assert read_status(folder)["state"] == "running"  # a kill leaves no word behind
    subprocess.run([sys.executable, str(script), str(output), "resumed"], env=env, check=True,
                   timeout=300)
    after = read_index(folder)
    numbers = [e["n"] for e in after]
    assert numbers == sorted(set(numbers)) and numbers[-1] > before[-1]["n"]
    # the first run's pictures are still there, as they were
    kept_before = [e for e in before if e["n"] in numbers]
    assert kept_before and all(
        (folder / e["file"]).is_file() and e in after for e in kept_before)
    status = read_status(folder)
    assert status["runs"] == 2 and status["state"] == "finished"
    assert sorted(p.name for p in folder.glob("*.png")) == [e["file"] for e in after]


def _history_entries(output):
    folders = list(output.rglob("fit_history")) if output.exists() else []
    return read_index(folders[0]) if folders else []
