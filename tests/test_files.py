"""Atomic writes: the target is either the old file or the whole new one."""

from __future__ import annotations

import pytest
import torch

from brainxl.files import atomic_torch_save, atomic_write_bytes, atomic_write_text


def test_atomic_writes_replace_the_target_and_leave_no_temporary(tmp_path):
    atomic_write_text(tmp_path / "a.json", "new é")
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == "new é"
    atomic_write_bytes(tmp_path / "a.json", b"\x00\x01")
    assert (tmp_path / "a.json").read_bytes() == b"\x00\x01"
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "m.pt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.pt"
    target.write_bytes(b"old")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save(Unpicklable(), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
