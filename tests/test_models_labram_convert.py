"""Official LaBraM checkpoint layout <-> brainxl encoder."""

from __future__ import annotations

import pytest
import torch
from labram_official import official_forward, official_state

from brainxl.channels import channel_indices
from brainxl.models.labram import LaBraMEncoder
from brainxl.models.labram_convert import (
    OFFICIAL_CHANNELS,
    convert_official_checkpoint,
    from_official,
    to_official,
    token_permutation,
)
from brainxl.models.neurobolt import NeuroBOLT
from brainxl.models.pretrained import apply_pretrained

NAMES = ["FP1", "CZ", "T7", "O2", "FP1-F7", "TPP10h"]


def _encoder(depth=2, filters=4, heads=2, **kw) -> LaBraMEncoder:
    torch.manual_seed(1)
    return LaBraMEncoder(depth=depth, filters=filters, heads=heads, drop_path=0.0, **kw).eval()


def _inputs(names=NAMES, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 30.0 * torch.randn(2, len(names), n * 200, generator=gen)
    rows = [0] + [OFFICIAL_CHANNELS.index(c) + 1 for c in names]
    return x, torch.tensor(channel_indices(names)), rows


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_converted_encoder_computes_the_official_function(qkv_bias):
    state = official_state(qkv_bias=qkv_bias)
    enc = _encoder(use_mask_token=True, qkv_bias=qkv_bias)
    converted, report = from_official(state, enc)
    enc.load_state_dict(converted)
    x, idx, rows = _inputs()
    with torch.no_grad():
        ours = enc.forward_features(x, idx)
        x_off = (x * 0.01).reshape(2, len(NAMES), 3, 200)
        ref = official_forward(state, x_off, rows, 2, "student.")
    perm = token_permutation(4, 25)
    torch.testing.assert_close(ours, ref[..., perm], atol=2e-5, rtol=1e-4)
    assert report.prefix == "student."
    aliases = {"T3": "T7", "T5": "P7", "T4": "T8", "T6": "P8", "A1": "M1", "A2": "M2"}
    assert report.rows_alias == aliases
    assert {"CB1", "CB2", "T1", "T2"} <= set(report.rows_unmapped)
    assert report.rows_loaded["FP1-F7"].upper() == "FP1-F7"
    assert any("lm_head" in note for note in report.notes)


def test_round_trips():
    enc = _encoder(use_mask_token=True)
    back, _ = from_official(to_official(enc), enc)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(back[k], v, atol=0, rtol=0, msg=k)
    state = official_state()
    target = _encoder(use_mask_token=True)
    target.load_state_dict(from_official(state, target)[0])
    again = to_official(target)
    skip = {"student.pos_embed", "student.lm_head.weight", "student.lm_head.bias"}
    assert set(again) == set(state) - {"student.lm_head.weight", "student.lm_head.bias"}
    for k in set(again) - skip:
        torch.testing.assert_close(again[k], state[k], atol=0, rtol=0, msg=k)
    pos, ref = again["student.pos_embed"][0], state["student.pos_embed"][0]
    row = {n: j + 1 for j, n in enumerate(OFFICIAL_CHANNELS[:128])}
    for name in ("FP1", "CZ", "TPP10h", "P8-O2"):  # P8-O2: the last row (128)
        assert torch.equal(pos[row[name]], ref[row[name]]), name
    assert torch.equal(pos[0], ref[0])
    assert torch.equal(pos[row["T3"]], ref[row["T7"]])  # alias rows come back as their target


def test_mismatches_are_named():
    state = official_state()
    with pytest.raises(ValueError, match=r"missing student\.blocks\.2\.norm1\.weight"):
        from_official(state, _encoder(depth=3, use_mask_token=True))
    extra = {**state, "student.blocks.0.attn.relative_position_bias_table": torch.zeros(3, 2)}
    with pytest.raises(ValueError, match="relative_position_bias_table"):
        from_official(extra, _encoder(use_mask_token=True))
    with pytest.raises(ValueError, match=r"width 100 \(4 conv filters\).*width 50 \(2 filters\)"):
        from_official(state, _encoder(filters=2, use_mask_token=True))
    msg = r"blocks\.0\.attn\.q_norm\.weight: file gives \(50,\), encoder has \(25,\)"
    with pytest.raises(ValueError, match=msg):
        from_official(state, _encoder(heads=4, use_mask_token=True))
    with pytest.raises(ValueError, match="qkv_bias=True"):
        from_official(official_state(qkv_bias=True), _encoder())
    dropped = {k: v for k, v in state.items() if k != "student.blocks.1.gamma_2"}
    with pytest.raises(ValueError, match=r"missing student\.blocks\.1\.gamma_2"):
        from_official(dropped, _encoder(use_mask_token=True))
    with pytest.raises(ValueError, match="not an official LaBraM checkpoint"):
        from_official({"foo": torch.zeros(1)}, _encoder())


def test_converted_file_initialises_neurobolt(tmp_path):
    state = official_state(filters=4, heads=2, prefix="")
    src = tmp_path / "labram-base.pth"
    torch.save({"model": state}, src)
    report = convert_official_checkpoint(src, tmp_path / "converted.pt")
    assert report.prefix == ""
    model = NeuroBOLT.from_flavor("debug", n_rois=3, filters=4).eval()
    loaded = apply_pretrained(model, tmp_path / "converted.pt")
    assert "mask_token" in loaded.ignored
    x, idx, rows = _inputs(n=16)
    with torch.no_grad():
        ours = model.encoder.forward_features(x, idx)
        ref = official_forward(state, (x * 0.01).reshape(2, len(NAMES), 16, 200), rows, 2, "")
    torch.testing.assert_close(ours, ref[..., token_permutation(4, 25)], atol=2e-5, rtol=1e-4)


def test_convert_labram_command(tmp_path, capsys):
    from brainxl.launch.cli import main

    src = tmp_path / "labram-base.pth"
    torch.save({"model": official_state(filters=4, heads=2, prefix="")}, src)
    dst = tmp_path / "out" / "encoder.pt"
    assert main(["convert-labram", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "channel rows loaded" in out and f"model.pretrained={dst}" in out
    model = NeuroBOLT.from_flavor("debug", n_rois=3, filters=4)
    assert "mask_token" in apply_pretrained(model, dst).ignored
    before = dst.read_bytes()
    assert main(["convert-labram", str(src), str(dst)]) == 2  # never replaced silently
    assert "--overwrite" in capsys.readouterr().err and dst.read_bytes() == before
    assert main(["convert-labram", str(tmp_path / "missing.pth"), str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
