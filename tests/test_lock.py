"""Two train processes on one output directory: the second is refused at once; a stale lock is not."""

from __future__ import annotations

import multiprocessing as mp
import os

from .conftest import fails, write_config


def _hold(path: str, ready, release) -> None:
    from textlora.fsutil import hold_lock

    handle = hold_lock(path, what="output_dir x")
    ready.set()
    release.wait(30)
    handle.close()


def test_second_train_on_the_same_output_dir_is_refused(tmp_path, tiny_bert, data_dir, capsys):
    from textlora.cli import main
    from textlora.training import lock_path

    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", out, train={"epochs": 1})
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(lock_path(out)), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        err = fails(capsys, ["train", "--config", str(cfg)], f"is in use by another textlora process (pid {holder.pid})")
        assert str(out) in err and not out.exists()
    finally:
        release.set()
        holder.join(30)
    # the holder is gone (as a killed process would be): its lock file stays, and does not block
    assert lock_path(out).is_file()
    assert main(["train", "--config", str(cfg)]) == 0


def test_stale_lock_file_with_a_dead_pid_does_not_block(tmp_path, tiny_bert, data_dir):
    from textlora.cli import main
    from textlora.training import lock_path

    out = tmp_path / "run"
    lock_path(out).write_text("999999999\n")
    cfg = write_config(tmp_path / "c.yaml", tiny_bert, data_dir / "train.csv", out, train={"epochs": 1})
    assert main(["train", "--config", str(cfg)]) == 0
    assert lock_path(out).read_text().strip() != "999999999" or os.name != "posix"
