"""Pictures on disk: atomic, and readable by whoever the umask says may read them."""

from __future__ import annotations

import os
import stat

import pytest

from autofit_jaxviz.render.png import PNG_SIGNATURE, write_png_atomically

PNG = PNG_SIGNATURE + b"rest of a picture"


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_picture_gets_the_mode_open_would_give_it(tmp_path, umask, mask, expected):
    umask(mask)
    path = write_png_atomically(PNG, tmp_path / "fit.png")
    assert mode_of(path) == expected
    with open(tmp_path / "plain.txt", "w"):
        pass
    assert mode_of(tmp_path / "plain.txt") == expected  # the same as open()


def test_an_existing_pictures_mode_is_kept(tmp_path, umask):
    umask(0o077)
    path = tmp_path / "fit.png"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)  # a colleague's group may read it
    write_png_atomically(PNG, path)
    assert mode_of(path) == 0o640 and path.read_bytes() == PNG


def test_no_temporary_file_is_left_behind(tmp_path):
    write_png_atomically(PNG, tmp_path / "fit.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.png"]
