"""Atomic writes (nafrestore.utils.files): final permissions, stale temporaries, one message on failure, exclusive."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import nafrestore.utils.files as files
from nafrestore.data.io import save_image
from nafrestore.engine.checkpoint import load_checkpoint, save_checkpoint
from nafrestore.errors import DataError, NafrestoreError, OutputError, OutputExistsError
from nafrestore.utils.files import atomic_path, atomic_write, remove_stale_temporaries

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def umask() -> Iterator[None]:
    """Restores the process umask after a test that sets it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------------------
# 1. Permissions and stale temporaries


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_new_files_get_the_mode_a_normal_write_gives(tmp_path, umask, mask):
    os.umask(mask)
    with atomic_write(tmp_path / "a.json", "w", encoding="utf-8") as f:
        f.write("{}")
    with atomic_path(tmp_path / "b.bin") as tmp:  # a writer that wants a file name
        tmp.write_bytes(b"x")
    with atomic_write(tmp_path / "c.bin", exclusive=True) as f:
        f.write(b"x")
    with open(tmp_path / "plain.bin", "wb") as f:  # what a normal write gives
        f.write(b"x")
    assert mode_of(tmp_path / "plain.bin") == 0o666 & ~mask
    for name in ("a.json", "b.bin", "c.bin"):
        assert mode_of(tmp_path / name) == 0o666 & ~mask, name


def test_rewriting_a_file_keeps_its_mode(tmp_path, umask):
    os.umask(0o022)
    target = tmp_path / "best.pt"
    target.write_bytes(b"old")
    target.chmod(0o640)
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and mode_of(target) == 0o640
    save_image(tmp_path / "x.png", np.zeros((4, 4, 3)))
    (tmp_path / "x.png").chmod(0o604)
    save_image(tmp_path / "x.png", np.ones((4, 4, 3)))
    assert mode_of(tmp_path / "x.png") == 0o604


def _leftover(folder: Path, name: str) -> Path:
    """A temporary file exactly as a process killed while writing ``folder/name`` leaves it."""

    class Killed(Exception):
        pass

    with pytest.raises(Killed), atomic_path(folder / name) as tmp:
        tmp.write_bytes(b"\0" * 1000)
        os.link(tmp, folder / "kept")  # survives the clean-up a killed process never gets to
        raise Killed
    (folder / "kept").rename(tmp)
    return tmp


def test_remove_stale_temporaries_removes_only_leftovers_of_that_target(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "last.pt").write_bytes(b"good")
    leftovers = [_leftover(ckpts, "last.pt") for _ in range(4)]
    leftovers.append(ckpts / ".last.pt.k_x9ab0z.tmp")  # tempfile.mkstemp's naming (older nafrestore versions)
    leftovers[-1].write_bytes(b"old")
    leftovers.append(ckpts / ".last.pt.1a2b3c4d.tmp.data")  # a side file a writer added beside its temporary
    leftovers[-1].write_bytes(b"side")
    keep = [".best.pt.1a2b3c4d.tmp", ".last.pt.x.1a2b3c4d.tmp", ".last.pt.old", "last.pt.1a2b3c4d.tmp", "notes.tmp"]
    for name in keep:
        (ckpts / name).write_bytes(b"not ours")
    removed = remove_stale_temporaries(ckpts, "last.pt")
    assert sorted(removed) == sorted(leftovers)
    assert names(ckpts) == sorted([*keep, "last.pt"])
    assert (ckpts / "last.pt").read_bytes() == b"good"
    assert remove_stale_temporaries(ckpts, "last.pt") == []
    assert remove_stale_temporaries(tmp_path / "missing", "last.pt") == []  # a run that has not saved yet
    with pytest.raises(ValueError):
        remove_stale_temporaries(ckpts, "sub/last.pt")


@pytest.mark.skipif(not files.HAS_FILE_LOCKS, reason="claims need POSIX locks")
def test_a_claim_excludes_other_claims_until_released_or_its_process_dies(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "out" / "a.png"
    first, second = files.OutputClaim(target), files.OutputClaim(target)
    assert first.acquire() and first.lock.is_file()
    assert not second.acquire()  # held (also within one process: each claim opens the lock file itself)
    first.release()
    assert not first.lock.exists()
    assert second.acquire()
    second.release()
    # A holder killed with SIGKILL releases the lock with its process; its lock file and temporary file stay
    # behind: the next claim of that target may remove the temporary file, and its release removes the lock file.
    code = (
        "import sys, time; from nafrestore.utils.files import OutputClaim; c = OutputClaim(sys.argv[1]); "
        "assert c.acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not first.acquire()
        leftover = target.with_name(".a.png.1a2b3c4d.tmp")
        leftover.write_bytes(b"half an image")
        assert files.targets_with_leftovers(target.parent) == {"a.png"}
    finally:
        holder.kill()
        holder.wait()
    assert first.lock.exists() and leftover.exists()
    assert first.acquire()
    assert remove_stale_temporaries(target.parent, "a.png") == [leftover]  # safe now: no live writer is left
    first.release()
    assert names(target.parent) == [] and files.targets_with_leftovers(target.parent) == set()
    assert files.targets_with_leftovers(tmp_path / "missing") == set()


# ------------------------------------------------------------------------------------------------------------
# 2. Failed writes: one message, old file intact, no temporary left


def _assert_one_output_error(info: pytest.ExceptionInfo, target: Path, words: str) -> None:
    err = info.value
    assert isinstance(err, OutputError) and isinstance(err, NafrestoreError) and err.exit_code == 1
    message = str(err)
    assert str(target) in message and words in message and "\n" not in message, message
    assert err.path == target


def test_unwritable_folder_is_one_message(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "x.png"
    target.write_bytes(b"previous")
    if IS_ROOT:
        # root ignores permission bits, so chmod 0o555 cannot make a folder unwritable here: the creation of the
        # temporary file fails the way the kernel makes it fail for an ordinary user instead.
        real_open = os.open

        def denied(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(files.os, "open", denied)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OutputError) as info:
            with atomic_write(target) as f:
                f.write(b"new")
    finally:
        folder.chmod(0o755)
    _assert_one_output_error(info, target, "no permission")
    monkeypatch.undo()
    assert target.read_bytes() == b"previous" and names(folder) == ["x.png"]


def test_folder_that_is_a_file_is_one_message(tmp_path):
    (tmp_path / "runs").write_text("a file where a folder should be")
    target = tmp_path / "runs" / "x" / "metrics.json"
    with pytest.raises(OutputError) as info:
        with atomic_write(target, "w") as f:
            f.write("{}")
    _assert_one_output_error(info, target, "is a file, not a folder")
    assert str(tmp_path / "runs") in str(info.value)
    with pytest.raises(OutputError, match="is a file, not a folder"):  # the parent itself is the file
        with atomic_path(tmp_path / "runs" / "y.onnx"):
            pass
    assert names(tmp_path) == ["runs"]


def test_full_disk_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(OutputError) as info:
        with atomic_write(target, "w") as f:
            f.write("half of the new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _assert_one_output_error(info, target, "no space left on the device")
    assert target.read_text() == "old" and names(tmp_path) == ["metrics.json"]


def test_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(
        {"format_version": 1, "model": {"w": torch.zeros(1)}, "config": {}, "step": 1}, tmp_path / "last.pt"
    )
    real_save = torch.save

    def filling_save(obj, f, *args, **kwargs):  # writes part of the file, then the disk is full
        real_save(obj, f, *args, **kwargs)
        f.truncate(50)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", filling_save)
    with pytest.raises(OutputError) as info:
        save_checkpoint({"format_version": 1, "model": {"w": torch.ones(1)}, "config": {}, "step": 2}, path)
    _assert_one_output_error(info, path, "no space left on the device")
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and names(tmp_path) == ["last.pt"]


def test_full_disk_while_saving_an_image_is_also_a_data_error(tmp_path, monkeypatch):
    target = save_image(tmp_path / "x.png", np.zeros((4, 4, 3)))
    before = target.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(DataError) as info:  # save_image has always raised DataError for unwritable files
        save_image(target, np.ones((4, 4, 3)))
    _assert_one_output_error(info, target, "no space left on the device")
    monkeypatch.undo()
    assert target.read_bytes() == before and names(tmp_path) == ["x.png"]


def test_read_only_file_system_is_named(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(files.os, "replace", read_only)
    with pytest.raises(OutputError) as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
    _assert_one_output_error(info, target, "read-only file system")
    assert target.read_bytes() == b"old" and names(tmp_path) == ["m.onnx"]


def test_other_errors_inside_the_block_are_not_rewritten(tmp_path):
    # An OSError about another file (e.g. an input the writer reads) is not a failed write of the output.
    with pytest.raises(FileNotFoundError) as info:
        with atomic_write(tmp_path / "out.bin") as f:
            f.write((tmp_path / "missing-input.bin").read_bytes())
    assert not isinstance(info.value, OutputError)
    with pytest.raises(KeyError):
        with atomic_write(tmp_path / "out.bin"):
            raise KeyError("bug")
    assert names(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------
# 3. Exclusive writes


def test_exclusive_write_never_replaces_an_existing_file(tmp_path):
    target = tmp_path / "out.png"
    with atomic_write(target, exclusive=True) as f:
        f.write(b"first run")
    assert target.read_bytes() == b"first run" and target.stat().st_nlink == 1
    with pytest.raises(FileExistsError) as info:
        with atomic_write(target, exclusive=True) as f:
            f.write(b"second run")
    assert isinstance(info.value, OutputExistsError) and str(target) in str(info.value)
    assert target.read_bytes() == b"first run" and names(tmp_path) == ["out.png"]
    with atomic_write(target) as f:  # the default still replaces
        f.write(b"replaced")
    assert target.read_bytes() == b"replaced"


def test_exclusive_write_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch):
    calls = []

    def no_links(src, dst):
        calls.append(dst)
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(files.os, "link", no_links)
    target = tmp_path / "out.png"
    with atomic_write(target, exclusive=True) as f:
        f.write(b"first run")
    assert target.read_bytes() == b"first run" and calls
    with pytest.raises(OutputExistsError):
        with atomic_write(target, exclusive=True) as f:
            f.write(b"second run")
    assert target.read_bytes() == b"first run" and names(tmp_path) == ["out.png"]


def test_save_image_exclusive(tmp_path):
    target = save_image(tmp_path / "x.png", np.zeros((4, 4, 3)), exclusive=True)
    before = target.read_bytes()
    with pytest.raises(FileExistsError):
        save_image(target, np.ones((4, 4, 3)), exclusive=True)
    assert target.read_bytes() == before and names(tmp_path) == ["x.png"]
