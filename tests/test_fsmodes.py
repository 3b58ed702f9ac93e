"""tfp.fsmodes: private folders and files whatever the umask, and never a change to what is not tfp's."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tfp.fsmodes import private_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_missing_folders_are_made_0700_under_a_loose_umask(tmp_path):
    old = os.umask(0o022)
    try:
        private_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700


@pytest.mark.parametrize("in_the_way", ["file", "device", "link to a file"])
def test_a_non_folder_in_the_way_is_refused_and_its_mode_left_alone(tmp_path, in_the_way):
    """A path under a file or a device (``/dev/null/keys``) once made tfp chmod that file or device 0700:
    ``mkdir`` said it exists, and its mode was then "narrowed". It must be refused untouched."""
    target = tmp_path / "notes.txt"
    target.write_text("x\n", encoding="utf-8")
    os.chmod(target, 0o644)
    if in_the_way == "device":
        target = Path("/dev/null")
    elif in_the_way == "link to a file":
        (tmp_path / "link").symlink_to(target)
        target = tmp_path / "link"
    before = os.stat(target).st_mode
    with pytest.raises(NotADirectoryError):
        private_dir(target / "keys")
    with pytest.raises(NotADirectoryError):
        private_dir(target)
    assert os.stat(target).st_mode == before
