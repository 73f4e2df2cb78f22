import os
import stat

import pytest

from pipeline.fsutil import atomic_output, write_text_atomic


def test_delivered_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "delivered.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "delivered.json").stat().st_mode) == 0o644


def test_failure_leaves_neither_the_final_name_nor_a_temp_file(tmp_path):
    final = tmp_path / "final.mp4"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_bytes(b"half-written")
        raise RuntimeError("ffmpeg died")
    assert final.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.mp4"]


def test_atomic_output_never_touches_the_process_umask(tmp_path, monkeypatch):
    """Worker threads write files at the same time: setting the umask (even to read it) from one of them
    would give another thread's new file the wrong mode."""

    def forbidden(_mask):
        raise AssertionError("atomic_output changed the process umask")

    monkeypatch.setattr(os, "umask", forbidden)
    write_text_atomic(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").read_text() == "{}"
