"""model.pretrained: a brainxl pretraining checkpoint initialises NeuroBOLT's encoder."""

from __future__ import annotations

import pytest
import torch
from brainxl.distrib.config import ConfigError, load_config
from brainxl.distrib.engine import param_groups

from brainxl.models.labram import LaBraMEncoder
from brainxl.models.neurobolt import NeuroBOLT
from brainxl.models.pretrained import apply_pretrained
from brainxl.models.registry import build_model


def _neurobolt(flavor: str = "debug", **kw) -> NeuroBOLT:
    torch.manual_seed(3)
    return NeuroBOLT.from_flavor(flavor, n_rois=4, **kw)


def _mem_run(tmp_path, flavor="debug", **kw):
    torch.manual_seed(7)
    mem = build_model("labram", flavor, **kw)
    run = tmp_path / "pretrain-run"
    run.mkdir()
    torch.save(mem.state_dict(), run / "final_model.pt")  # what the trainer writes
    return mem, run


@pytest.mark.parametrize(
    ("flavor", "kw"),
    [("debug", {}), ("small", {}), ("debug", {"readout": "channel", "spatial_filters": 4})],
    ids=["debug", "small", "spatial-filters"],
)
def test_mem_run_initialises_every_encoder_tensor(tmp_path, flavor, kw):
    mem, run = _mem_run(tmp_path, flavor)
    model = _neurobolt(flavor, **kw)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = apply_pretrained(model, run)
    own = model.encoder.state_dict()
    assert sorted(report.loaded) == sorted(own)
    for k, v in own.items():
        assert torch.equal(v, mem.encoder.state_dict()[k]), k
    assert report.ignored == {"mask_token": "masked-modeling token, used only in pretraining"}
    assert report.other == 2  # lm_head weight and bias
    for k, v in model.state_dict().items():  # the rest of the model is untouched
        if not k.startswith("encoder."):
            assert torch.equal(v, before[k]), k


def test_tokenizer_and_saved_encoder_files_load(tmp_path):
    torch.manual_seed(2)
    tok = build_model("labram-tokenizer", "debug")
    tok.save_weights(tmp_path / "tok.pt")
    model = _neurobolt()
    report = apply_pretrained(model, tmp_path / "tok.pt")
    assert report.source == "encoder.* of the file" and not report.ignored
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, tok.encoder.state_dict()[k]), k
    enc = LaBraMEncoder(depth=2, filters=2, heads=2)
    enc.save_weights(tmp_path / "enc.pt")
    assert apply_pretrained(_neurobolt(), tmp_path / "enc.pt").source.startswith("the whole file")


def test_mismatches_are_named_and_nothing_changes(tmp_path):
    _, run = _mem_run(tmp_path, depth=3)
    model = _neurobolt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"file key\(s\) the encoder does not have: blocks\.2\."):
        apply_pretrained(model, run)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    (tmp_path / "b").mkdir()
    _, run2 = _mem_run(tmp_path / "b")  # 16 temporal rows; a 20 s NeuroBOLT has 20
    with pytest.raises(ValueError, match=r"time_embed: file \(16, 50\) vs model \(20, 50\)"):
        apply_pretrained(_neurobolt(window_s=20), run2)
    with pytest.raises(ValueError, match="does not exist"):
        apply_pretrained(_neurobolt(), tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without final_model.pt"):
        apply_pretrained(_neurobolt(), tmp_path / "empty")


def test_amplitude_embedding_loads_and_a_one_sided_one_is_named(tmp_path):
    mem, run = _mem_run(tmp_path, amplitude_embed=True)
    model = _neurobolt(amplitude_embed=True)
    report = apply_pretrained(model, run)
    assert {"amplitude_embed.weight", "amplitude_embed.bias"} <= set(report.loaded)
    assert torch.equal(model.encoder.amplitude_embed.weight, mem.encoder.amplitude_embed.weight)
    with pytest.raises(ValueError, match=r"does not have: amplitude_embed\.bias.*same model"):
        apply_pretrained(_neurobolt(), run)
    (tmp_path / "plain").mkdir()
    _, plain = _mem_run(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"missing from the file: amplitude_embed\.bias"):
        apply_pretrained(_neurobolt(amplitude_embed=True), plain)


def test_samba_is_refused_with_the_reason(tmp_path):
    _, run = _mem_run(tmp_path)
    samba = build_model("samba-eeg2fmri", "debug")
    with pytest.raises(ValueError, match="no LaBraM encoder.*parcel time series"):
        apply_pretrained(samba, run)


def test_config_key_and_layer_decay(tmp_path):
    cfg = load_config("quickstart", [f"model.pretrained={tmp_path}"])
    assert cfg.model.pretrained == str(tmp_path)
    assert load_config("quickstart").model.pretrained == ""
    _, run = _mem_run(tmp_path)
    model = _neurobolt()
    params = {id(p) for p in model.parameters()}
    apply_pretrained(model, run)
    assert {id(p) for p in model.parameters()} == params  # loaded in place
    groups = param_groups(model, 1e-3, 0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    top = model.encoder.depth + 1
    block0 = lr_of[id(named["encoder.blocks.0.attn.qkv.weight"])]
    assert block0 == pytest.approx(1e-3 * 0.5 ** (top - 1))
    assert lr_of[id(named["encoder.cls_token"])] == pytest.approx(1e-3 * 0.5**top)
    assert lr_of[id(named["head.weight"])] == pytest.approx(1e-3)


def test_encoder_frozen_steps_groups_the_encoder_and_holds_its_schedule():
    from brainxl.distrib.engine import FROZEN_STEPS, _Schedule

    model = _neurobolt()
    groups = param_groups(model, 1e-3, 1.0, encoder_frozen_steps=3)
    frozen = {id(p) for g in groups if g.get(FROZEN_STEPS) == 3 for p in g["params"]}
    named = dict(model.named_parameters())
    assert frozen == {id(p) for n, p in named.items() if n.startswith("encoder.")}
    assert id(named["head.weight"]) not in frozen and frozen
    assert all(g["lr"] == pytest.approx(1e-3) for g in groups)
    decayed = param_groups(model, 1e-3, 0.5, encoder_frozen_steps=3)
    lr_of = {id(p): (g["lr"], g.get(FROZEN_STEPS, 0)) for g in decayed for p in g["params"]}
    top = model.encoder.depth + 1
    assert lr_of[id(named["encoder.cls_token"])] == (pytest.approx(1e-3 * 0.5**top), 3)
    assert lr_of[id(named["head.weight"])] == (pytest.approx(1e-3), 0)
    # held at 0, then the group's own warm-up (2 steps) on top of the run's schedule
    held = _Schedule(2, 10, "constant", 0.0, frozen=3)
    assert [held(s) for s in range(6)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert [_Schedule(2, 10, "constant", 0.0)(s) for s in range(3)] == [0.5, 1.0, 1.0]
    samba = build_model("samba-eeg2fmri", "debug")
    with pytest.raises(ValueError, match="train.encoder_frozen_steps: .*no LaBraM encoder"):
        param_groups(samba, 1e-3, 1.0, encoder_frozen_steps=3)
    with pytest.raises(ConfigError, match="train.encoder_frozen_steps must be >= 0"):
        load_config("quickstart", ["train.encoder_frozen_steps=-1"])


def test_a_fine_tune_on_another_input_scale_than_pretraining_is_warned(tmp_path):
    from brainxl.models.pretrained import input_scale_warning, pretraining_channel_norm

    _, run = _mem_run(tmp_path)
    assert pretraining_channel_norm(run) is None  # no config: the scale is not known
    (run / "config.yaml").write_text("pretrain:\n  stage: mem\ndata:\n  window_s: 4\n")
    assert pretraining_channel_norm(run) == "none"  # written before the option: microvolts
    (run / "config.yaml").write_text("pretrain:\n  stage: mem\ndata:\n  channel_norm: recording\n")
    assert pretraining_channel_norm(run / "final_model.pt") == "recording"
    (run / "config.yaml").write_text("model:\n  name: neurobolt\n")  # a translation run
    assert pretraining_channel_norm(run) is None
    for scale, reads in [(None, "fold"), ("none", "none"), ("recording", "subject"),
                         ("recording", "fold")]:  # fmt: skip
        assert input_scale_warning(scale, reads) == ""
    micro = input_scale_warning("none", "subject")
    assert "pretrained on microvolts" in micro and "set data.reader.ephys_norm=none to" in micro
    z = input_scale_warning("recording", "none")
    assert "pretrained on z-scored channels (data.channel_norm=recording)" in z
    assert z.endswith("set data.reader.ephys_norm=subject to read what it learned from")
