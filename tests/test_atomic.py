"""The one atomic-write helper: all or nothing under the final name."""

import os
import stat
from pathlib import Path

import pytest

from vqvae.atomic import atomic_write, write_json


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "sub" / "file.json"
    write_json(path, {"version": 1})

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write('{"version": 2, "trunc')
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.json"]


def test_written_files_are_readable_by_others(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"abc"))
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
