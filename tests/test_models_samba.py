"""SAMBA in both directions: registry contract, causality, determinism, graphs, training."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from brainxl.models.graph import GATv2, fc_graph, neighbour_table, ring_graph
from brainxl.models.registry import build_model, count_parameters, get_model_spec
from brainxl.models.samba import SambaEEG2fMRI, SambaFMRI2EEG
from brainxl.models.samba import WaveletScaleAttention as SambaWaveletAttention

NAMES = ["samba-eeg2fmri", "samba-fmri2eeg"]


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_flavors_and_param_counts(name: str) -> None:
    spec = get_model_spec(name)
    assert spec.task == name.split("-")[1]
    assert set(spec.flavors) == {"debug", "base", "large"}
    for flavor, kw in spec.flavors.items():
        model = build_model(name, flavor)
        n, expected = count_parameters(model), kw["expected_params"]
        assert abs(n - expected) <= 0.02 * expected, (flavor, n, expected)
    inp, out = spec.describe_io("base")
    eeg, fmri = ("200 parcels x 30 s @ 200 Hz", "500 parcels x 15 TRs")
    assert (
        (eeg in inp and fmri in out) if name.endswith("eeg2fmri") else (fmri in inp and eeg in out)
    )


@pytest.mark.parametrize("name", NAMES)
def test_debug_forward_backward_all_parameters_train(name: str) -> None:
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = build_model(name, "debug")
    inputs = spec.example_inputs(model, 3)
    pred, aux = model(**inputs, return_aux=True)
    if name == "samba-eeg2fmri":
        assert pred.shape == (3, model.n_fmri, model.n_frames)
        w = aux["scale_weights"]
        assert w.shape == (3, model.n_eeg, model.n_frames, 4)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    else:
        assert pred.shape == (3, model.n_eeg, model.n_frames * model.samples_per_tr)
    loss, parts = model.loss(pred, torch.randn_like(pred), **aux)
    assert torch.isfinite(loss) and "cosine" in parts
    loss.backward()
    named = dict(model.named_parameters())
    assert "hrf.raw" in named and "hrf.raw" in model.state_dict()
    missing = [k for k, p in named.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [k for k, p in named.items() if p.grad.abs().sum() == 0]
    assert not zero, zero  # every parameter (HRF included) receives gradient
    opt = torch.optim.Adam(model.parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == count_parameters(model)


@pytest.mark.parametrize(
    "direct_path, direct_linear, hrf_history",
    [(False, False, "zero"), (True, False, "zero"), (True, True, "first_tr")],
)
def test_eeg2fmri_is_causal_over_frames(
    direct_path: bool, direct_linear: bool, hrf_history: str
) -> None:
    torch.manual_seed(0)
    for temporal in ("lstm", "gru", "conv"):
        model = build_model(
            "samba-eeg2fmri",
            "debug",
            temporal=temporal,
            direct_path=direct_path,
            direct_linear=direct_linear,
            hrf_history=hrf_history,
        ).eval()
        if direct_path:  # a non-zero direct map (it starts at zero)
            torch.nn.init.normal_(model.direct)
        x = model.n_frames * model.samples_per_tr
        x = torch.randn(2, model.n_eeg, x)
        S = model.samples_per_tr
        with torch.no_grad():
            y = model(x)
            x2 = x.clone()
            x2[..., 2 * S :] += torch.randn_like(x2[..., 2 * S :])  # change chunk 2 only
            y2 = model(x2)
        torch.testing.assert_close(y2[..., :2], y[..., :2])
        assert not torch.allclose(y2[..., 2], y[..., 2])


def _block_log_energies(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The direct path's inputs computed from the DWT matrix: ``(B, blocks, N * J)``."""
    k, S = model.blocks_per_tr, model.samples_per_tr
    blocks = x.reshape(x.shape[0], model.n_eeg, -1, S // k) @ model.dwt_w.T
    e = SambaWaveletAttention.log_energy(list(torch.split(blocks, model.lengths, -1)))
    return e.permute(0, 2, 1, 3).flatten(2)


def test_eeg2fmri_direct_path_is_linear_in_band_energies_through_the_hrf() -> None:
    """The direct path adds ``HRF * (W e + b)`` per parcel: starts at zero (the paper's
    model unchanged), then equals the HRF convolution of the linear drive read at frame
    ends, and trains with the rest."""
    torch.manual_seed(0)
    base = build_model("samba-eeg2fmri", "debug").eval()
    model = build_model("samba-eeg2fmri", "debug", direct_path=True).eval()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert sorted(missing) == ["direct", "direct_bias"] and not unexpected
    x = torch.randn(2, model.n_eeg, model.n_frames * model.samples_per_tr)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x))  # zero-initialised
        torch.nn.init.normal_(model.direct)
        torch.nn.init.normal_(model.direct_bias)
        k = model.blocks_per_tr
        drive = torch.einsum("mc,bnc->bmn", model.direct, _block_log_energies(model, x))
        expected = base(x) + model.hrf(drive + model.direct_bias)[..., k - 1 :: k]
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    model.train()
    loss, _ = model.loss(model(x), torch.randn(2, model.n_fmri, model.n_frames))
    loss.backward()
    assert model.direct.grad.abs().sum() > 0 and model.direct_bias.grad.abs().sum() > 0


def test_eeg2fmri_direct_linear_reads_powers_standardised_by_training_statistics() -> None:
    """``direct_linear``: the drive also reads exp(log-energy), standardised with running
    statistics that training batches set and evaluation only reads."""
    torch.manual_seed(0)
    model = build_model(
        "samba-eeg2fmri", "debug", direct_path=True, direct_linear=True, hrf_history="first_tr"
    )
    n_feat = model.n_eeg * len(model.lengths)
    assert model.direct.shape == (model.n_fmri, 2 * n_feat)
    x = torch.randn(4, model.n_eeg, model.n_frames * model.samples_per_tr)
    before = model.direct_norm.running_mean.clone()
    model.train()
    model(x)
    trained = model.direct_norm.running_mean.clone()
    assert not torch.allclose(trained, before)
    model.eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.direct, std=0.1)
        out = model(2.0 * x)
        assert torch.equal(model.direct_norm.running_mean, trained)  # evaluation reads only
        base = build_model("samba-eeg2fmri", "debug", hrf_history="first_tr").eval()
        base.load_state_dict(model.state_dict(), strict=False)
        k = model.blocks_per_tr
        e = _block_log_energies(model, 2.0 * x)
        bn = model.direct_norm
        p = (e.exp() - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
        drive = torch.einsum("mc,bnc->bmn", model.direct, torch.cat([e, p], -1))
        expected = base(2.0 * x) + model.hrf(drive + model.direct_bias, k)[..., k - 1 :: k]
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_eeg2fmri_loss_options() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(3, 12, 3), torch.randn(3, 12, 3)
    cos = 1 - torch.nn.functional.cosine_similarity(pred, target, dim=-1).mean()
    mse = torch.nn.functional.mse_loss(pred, target)
    for name, expected, keys in (
        ("cosine", cos, {"cosine"}),
        ("mse", mse, {"mse"}),
        ("cosine+mse", cos + mse, {"cosine", "mse"}),
    ):
        model = build_model("samba-eeg2fmri", "debug", loss=name)
        loss, parts = model.loss(pred, target)
        torch.testing.assert_close(loss, expected)
        assert set(parts) == keys
    with pytest.raises(ValueError, match=r"loss='l1'.*cosine, mse, cosine\+mse"):
        build_model("samba-eeg2fmri", "debug", loss="l1")
    with pytest.raises(ValueError, match="needs direct_path: true"):
        build_model("samba-eeg2fmri", "debug", direct_linear=True)
    with pytest.raises(ValueError, match="hrf_history='mean'"):
        build_model("samba-eeg2fmri", "debug", hrf_history="mean")


def test_pooled_pearson_loss_is_the_metric_over_concatenated_windows() -> None:
    """``pearson_pooled``: 1 - Pearson r per row over all (window, frame) pairs, as the
    held-out metric; invariant to each row's offset and scale, not to per-window ones."""
    from brainxl.models.samba import pooled_pearson_loss

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 6, 5, generator=g), torch.randn(4, 6, 5, generator=g)
    p = pred.permute(1, 0, 2).reshape(6, -1).numpy()
    t = target.permute(1, 0, 2).reshape(6, -1).numpy()
    r = np.mean([np.corrcoef(p[i], t[i])[0, 1] for i in range(6)])
    loss = pooled_pearson_loss(pred, target)
    assert loss.item() == pytest.approx(1 - r, abs=1e-5)
    scaled = pred * torch.linspace(0.5, 3, 6)[None, :, None] + torch.arange(6.0)[None, :, None]
    assert pooled_pearson_loss(scaled, target).item() == pytest.approx(loss.item(), abs=1e-5)
    shifted = pred + torch.arange(4.0)[:, None, None]  # a per-window offset changes it
    assert abs(pooled_pearson_loss(shifted, target).item() - loss.item()) > 1e-3
    assert pooled_pearson_loss(target, target).item() == pytest.approx(0.0, abs=1e-5)
    model = build_model("samba-eeg2fmri", "debug", loss="pearson_pooled")
    torch.testing.assert_close(model.loss(pred, target)[0], loss)
    rev = build_model(
        "samba-fmri2eeg", "debug", target="envelopes", loss="pearson_pooled", sfreq=200.0
    )
    env = torch.randn(2, rev.n_eeg * 3, rev.n_frames, generator=g)
    out, parts = rev.loss(env + 0.1, env)
    assert set(parts) == {"pearson_pooled"} and out.item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="fmri2eeg loss='cosine'"):
        build_model("samba-fmri2eeg", "debug", loss="cosine")


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_is_deterministic(name: str) -> None:
    spec = get_model_spec(name)
    model = build_model(name, "debug", dropout=0.5)
    inputs = spec.example_inputs(model, 2)
    model.train()
    torch.manual_seed(1)
    a = model(**inputs)
    b = model(**inputs)
    assert not torch.allclose(a, b)  # dropout active in training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs), model(**inputs), rtol=0, atol=0)


def test_wavelet_attention_depends_on_input() -> None:
    model = build_model("samba-eeg2fmri", "debug").eval()
    x = torch.randn(2, model.n_eeg, model.n_frames * model.samples_per_tr)
    _, aux = model(x, return_aux=True)
    w = aux["scale_weights"]
    assert (w[0] - w[1]).abs().max() > 1e-4  # differs between windows
    assert (w[:, 0] - w[:, 1]).abs().max() > 1e-4  # and between parcels


def test_bad_shapes_raise() -> None:
    model = build_model("samba-eeg2fmri", "debug")
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, model.n_eeg, model.samples_per_tr * 2 + 1))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, model.n_eeg + 1, model.samples_per_tr))
    rev = build_model("samba-fmri2eeg", "debug")
    with pytest.raises(ValueError, match="expects"):
        rev(torch.randn(1, rev.n_fmri + 2, 3))
    with pytest.raises(ValueError, match="whole samples"):
        SambaEEG2fMRI(n_eeg=4, n_fmri=4, sfreq=33.3, tr=2.0)


def test_fc_graph_top_k_symmetric_from_training_series() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 500))
    # nodes 0-4 follow signal 0, nodes 5-9 signal 1
    subj = [np.repeat(base, 5, axis=0) + 0.3 * rng.standard_normal((10, 500)) for _ in range(2)]
    ei = fc_graph(subj, k=3)
    assert ei.dtype == torch.long and ei.shape[0] == 2
    pairs = set(map(tuple, ei.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs)  # symmetric
    assert all(i != j for i, j in pairs)
    assert all((i < 5) == (j < 5) for i, j in pairs)  # only within-cluster edges
    deg = torch.bincount(ei[1], minlength=10)
    assert deg.min() >= 3
    assert torch.equal(fc_graph(subj[0], k=3), fc_graph([subj[0]], k=3))
    with pytest.raises(ValueError, match="k must"):
        fc_graph(subj, k=10)
    bad = subj[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fc_graph([bad], k=2)
    with pytest.raises(ValueError, match="n_nodes=10"):
        fc_graph([subj[0], subj[1][:9]], k=2)


def test_set_graphs_and_state_dict_roundtrip() -> None:
    torch.manual_seed(0)
    model = build_model("samba-eeg2fmri", "debug").eval()
    rng = np.random.default_rng(0)
    src = fc_graph(rng.standard_normal((model.n_eeg, 100)), k=5)
    tgt = fc_graph(rng.standard_normal((model.n_fmri, 100)), k=6)
    x = torch.randn(2, model.n_eeg, model.n_frames * model.samples_per_tr)
    with torch.no_grad():
        before = model(x)
        model.set_graphs(src, tgt)
        after = model(x)
    assert not torch.allclose(before, after)
    assert torch.equal(model.src_edge_index, src)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = build_model("samba-eeg2fmri", "debug").eval()  # default ring graphs, other E
    assert fresh.tgt_edge_index.shape != tgt.shape
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.tgt_edge_index, tgt)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), after)
    fresh.double()
    assert fresh.src_edge_index.dtype == torch.long  # buffers move, ids stay integer
    with pytest.raises(ValueError, match="node ids"):
        model.set_graphs(torch.tensor([[0, model.n_eeg]]).T, None)
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        model.set_graphs(torch.zeros(3, 4, dtype=torch.long), None)


def test_ring_graph_default() -> None:
    ei = ring_graph(10, 4)
    deg = torch.bincount(ei[1], minlength=10)
    assert torch.all(deg == 4)
    assert ring_graph(3, 8).shape[1] == 6  # capped at a full graph


def test_gatv2_equals_torch_geometric() -> None:
    from torch_geometric.nn import GATv2Conv

    torch.manual_seed(0)
    n, dim, heads, G = 12, 16, 4, 3
    ei = fc_graph(np.random.default_rng(0).standard_normal((n, 50)), k=3)
    ours = GATv2(dim, heads)
    ref = GATv2Conv(dim, dim // heads, heads=heads, add_self_loops=True)
    with torch.no_grad():
        ref.lin_l.weight.copy_(ours.lin_l.weight)
        ref.lin_l.bias.copy_(ours.lin_l.bias)
        ref.lin_r.weight.copy_(ours.lin_r.weight)
        ref.lin_r.bias.copy_(ours.lin_r.bias)
        ref.att.copy_(ours.att.unsqueeze(0))
        ref.bias.copy_(ours.bias)
    h = torch.randn(G, n, dim)
    for n_buckets in (1, 3):
        got = ours(h, neighbour_table(ei, n, n_buckets))
        for g in range(G):
            torch.testing.assert_close(got[g], ref(h[g], ei), atol=1e-5, rtol=1e-4)


def test_fmri2eeg_skip_loss_and_upsampling_shape() -> None:
    torch.manual_seed(0)
    model = build_model("samba-fmri2eeg", "debug")
    assert isinstance(model, SambaFMRI2EEG)
    y = torch.randn(2, model.n_fmri, model.n_frames)
    pred, aux = model(y, return_aux=True)
    assert [c.shape[-1] for c in aux["coeffs"]] == model.lengths
    target = torch.randn_like(pred)
    loss_cos, parts = model.loss(pred, target)
    assert set(parts) == {"cosine"}
    loss_all, parts = model.loss(pred, target, **aux)
    assert set(parts) == {"cosine", "skip"}
    torch.testing.assert_close(loss_all, loss_cos + model.skip_weight * parts["skip"])
    # skip targets are the DWT of the HRF-convolved target
    tgt = model.skip_targets(target)
    assert [t.shape for t in tgt] == [c.shape for c in aux["coeffs"]]


@pytest.mark.parametrize("name", NAMES)
def test_debug_model_learns(name: str) -> None:
    """A few Adam steps fit a fixed small batch (the loss falls clearly)."""
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = build_model(name, "debug", dropout=0.0)
    inputs = spec.example_inputs(model, 4)
    with torch.no_grad():
        target = torch.randn_like(model(**inputs))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        pred, aux = model(**inputs, return_aux=True)
        loss, _ = model.loss(pred, target, **aux)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses[::10]


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_cuda_bf16_step(name: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = get_model_spec(name)
    model = build_model(name, "debug").cuda()
    inputs = {k: v.cuda() for k, v in spec.example_inputs(model, 2).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        pred, aux = model(**inputs, return_aux=True)
        loss, _ = model.loss(pred, torch.randn_like(pred).float(), **aux)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.integration
def test_benchmark_script_runs_at_debug_size(
    capsys: pytest.CaptureFixture[str], load_script
) -> None:
    bench = load_script("benchmarks/bench_samba.py")
    assert bench.main(["--flavor", "debug", "--batch", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "eeg2fmri  params=5,265 train" in out and "peak RSS" in out
    assert "fmri2eeg  params=7,896 train" in out


def test_fmri2eeg_direct_path_reads_frames_around_each_chunk() -> None:
    """Envelopes with ``direct_path``: zero at the start (the paper's model unchanged), then
    chunk ``f`` gets ``W (sum_j filter_j y[f + j]) + b`` over ``j = -2 .. 5``."""
    from brainxl.models.samba import DIRECT_LAG, DIRECT_LEAD

    torch.manual_seed(0)
    kw = dict(target="envelopes", sfreq=200.0, n_frames=9)
    base = build_model("samba-fmri2eeg", "debug", **kw).eval()
    model = build_model("samba-fmri2eeg", "debug", direct_path=True, **kw).eval()
    model.load_state_dict(base.state_dict(), strict=False)
    y = torch.randn(2, model.n_fmri, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(y), base(y))
        for p in (model.direct, model.direct_filter, model.direct_bias):
            torch.nn.init.normal_(p)
        expected = base(y).clone()
        for f in range(9):
            drive = torch.zeros(2, model.n_fmri)
            for j in range(-DIRECT_LAG, DIRECT_LEAD + 1):
                if 0 <= f + j < 9:
                    drive += model.direct_filter[:, 0, j + DIRECT_LAG] * y[:, :, f + j]
            expected[:, :, f] += drive @ model.direct.T + model.direct_bias[:, 0]
        torch.testing.assert_close(model(y), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="direct_path=True needs target='envelopes'"):
        build_model("samba-fmri2eeg", "debug", direct_path=True)
