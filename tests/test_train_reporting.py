"""The report callable's sinks, resume truncation of metrics.jsonl, and the LR schedule."""

from __future__ import annotations

import pytest


def test_reporter_sinks_and_resume_truncation(tmp_path, capsys, monkeypatch) -> None:
    import io
    import json

    from brainxl.distrib.reporting import ConsoleSink, JsonlSink, Reporter, format_eta, wandb_mode

    buf = io.StringIO()
    jl = JsonlSink(tmp_path / "metrics.jsonl")
    rep = Reporter([ConsoleSink(buf), jl])
    for step in (1, 2, 3):
        rep(
            {
                "split": "train",
                "step": step,
                "total_steps": 3,
                "loss": 0.5,
                "lr": 1e-3,
                "samples_per_s": 10.0,
                "eta_s": 65.0,
            }
        )
    rep({"split": "test", "step": 3, "mean_r": 0.2})
    assert "[train] step 3/3 | 10.0 samples/s | loss 0.5000 | lr 1.00e-03 | ETA 0:01:05" in (
        buf.getvalue()
    )
    jl.truncate_after(2)  # a resumed run repeats steps 3.. and the test
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in recs] == [("train", 1), ("train", 2)]
    assert Reporter([jl], is_main=False).sinks == []
    assert format_eta(3725) == "1:02:05" and format_eta(float("nan")) == "?"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("offline") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode("offline") == "offline"


def test_lr_schedule_warmup_then_cosine() -> None:
    from brainxl.distrib.engine import lr_lambda

    vals = [lr_lambda(s, 4, 20, "cosine", 0.1) for s in range(21)]
    assert vals[:4] == [0.25, 0.5, 0.75, 1.0]
    assert vals[4] == pytest.approx(1.0) and vals[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(vals[4:], vals[5:]))
    assert lr_lambda(50, 4, 20, "constant", 0.0) == 1.0
