"""Diagnosis loop for SAMBA EEG/MEG -> fMRI: trains the model directly on shards in memory.

Not the product path (``brainxl train`` is): a plain single-process torch loop over
windows cut from whole recordings, to measure quickly what makes the model learn
(learning rate, loss, wavelet levels, blocks per TR, ...). Held-out r is computed as
``brainxl evaluate`` does: Pearson per ROI over all (window, frame) rows, one window per TR.

Usage::

    python experiments/samba_diag.py SHARDS --test 01 --modality parcels --steps 300 \
        --set lr=3e-3 level=4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def load(shards: str, subjects: list[str], modality: str) -> dict[str, list[tuple]]:
    """Per subject: list of (ephys (C, T) float32, bold (R, n_trs), lead_in samples)."""
    from brainxl.distrib.data import recording_timeseries
    from brainxl.shards.manifest import read_manifest

    m = read_manifest(shards)
    sfreq = float(m["sfreq"])
    out = {}
    for s in subjects:
        ser = recording_timeseries(shards, [s], (modality, "bold"), ephys_hz=0, max_seconds=0)
        lead = int(round(float(m["subjects"][s]["runs"][0]["lead_in"]) * sfreq))
        out[s] = [(e, b, lead) for e, b in zip(ser[modality], ser["bold"])]
    return out


def windows(recs, n_frames: int, S: int):
    """All (ephys window, bold frames) pairs: window ending at TR k, frames k-F+1..k."""
    X, Y = [], []
    for e, b, lead in recs:
        for k in range(n_frames - 1, b.shape[1]):
            end = lead + k * S
            if end - n_frames * S < 0 or end > e.shape[1]:
                continue
            X.append(e[:, end - n_frames * S : end])
            Y.append(b[:, k - n_frames + 1 : k + 1])
    return np.stack(X), np.stack(Y)


def zstats(recs_by_sub, subs):
    e = np.concatenate([r[0] for s in subs for r in recs_by_sub[s]], axis=1)
    b = np.concatenate([r[1] for s in subs for r in recs_by_sub[s]], axis=1)
    return (e.mean(1), e.std(1)), (b.mean(1), b.std(1))


def pearson_cols(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = p - p.mean(0)
    y = y - y.mean(0)
    return (p * y).sum(0) / np.sqrt((p * p).sum(0) * (y * y).sum(0) + 1e-30)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("--test", default="01")
    ap.add_argument("--modality", default="parcels")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--flavor", default="debug")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="model overrides key=value")
    ap.add_argument("--train", default="", help="training subjects (default: all but --test)")
    ap.add_argument("--bids", default="", help="simulated BIDS root: compare learned HRFs")
    ap.add_argument("--ridge", action="store_true", help="also fit the multi-frame ridge")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    from brainxl.shards.manifest import read_manifest

    from brainxl.models.registry import build_model

    m = read_manifest(a.shards)
    sfreq, tr = float(m["sfreq"]), float(m["tr"])
    S = int(round(sfreq * tr))
    subs = sorted(m["subjects"])
    train = a.train.split(",") if a.train else [s for s in subs if s != a.test]
    recs = load(a.shards, sorted(set(train) | {a.test}), a.modality)
    (em, es), (bm, bs) = zstats(recs, train)

    def z(e: np.ndarray, b: np.ndarray, lead: int) -> tuple:
        return (e - em[:, None]) / es[:, None], (b - bm[:, None]) / bs[:, None], lead

    norm = {s: [z(*rec) for rec in r] for s, r in recs.items()}
    per_sub = [windows(norm[s], 15, S) for s in train]
    Xtr = np.concatenate([w[0] for w in per_sub])
    Ytr = np.concatenate([w[1] for w in per_sub])
    Xte, Yte = windows(norm[a.test], 15, S)
    ridge_frame_r = None
    if a.ridge:
        from brainxl.baselines import EEG2FMRI_LAGS, MultiFrameRidge, frame_band_power

        ridge = MultiFrameRidge(EEG2FMRI_LAGS).fit(
            [frame_band_power(x, sfreq, 15) for x, _ in per_sub],
            [y.transpose(0, 2, 1) for _, y in per_sub],
        )
        Pr = ridge.predict(frame_band_power(Xte, sfreq, 15))  # (n, F, R)
        Yf = Yte.transpose(0, 2, 1)
        rr = pearson_cols(Pr.reshape(-1, Pr.shape[-1]), Yf.reshape(-1, Yf.shape[-1]))
        ridge_frame_r = [float(np.nanmean(pearson_cols(Pr[:, f], Yf[:, f]))) for f in range(15)]
        print(f"ridge test_r {np.nanmean(rr):.4f}", flush=True)
        del per_sub
    kw = {}
    for item in a.set:
        k, v = item.split("=")
        kw[k] = (
            type(eval(v))(eval(v))
            if v[0].isdigit() or v[0] in "-."
            else (v == "True" if v in ("True", "False") else v)
        )
    model = build_model(
        "samba-eeg2fmri", a.flavor, n_eeg=Xtr.shape[1], n_fmri=Ytr.shape[1], n_frames=15,
        sfreq=sfreq, tr=tr, **kw,
    )  # fmt: skip
    if hasattr(model, "set_graphs"):
        from brainxl.models.graph import fc_graph

        k = min(model.graph_k, Xtr.shape[1] - 1)
        src = fc_graph([r[0][:, ::10] for s in train for r in norm[s]], k)
        tgt = fc_graph([r[1] for s in train for r in norm[s]], min(model.graph_k, Ytr.shape[1] - 1))
        model.set_graphs(src, tgt)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    rng = np.random.default_rng(a.seed)
    Xtr_t, Ytr_t = torch.from_numpy(Xtr).float(), torch.from_numpy(Ytr).float()
    Xte_t = torch.from_numpy(Xte).float()
    hist = []
    t0 = time.time()
    first = None
    for step in range(1, a.steps + 1):
        idx = rng.integers(0, len(Xtr_t), a.batch)
        pred = model(Xtr_t[idx])
        loss, _ = model.loss(pred, Ytr_t[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
        if step % a.every == 0 or step == a.steps:
            model.eval()
            with torch.no_grad():
                P = torch.cat([model(Xte_t[i : i + 64]) for i in range(0, len(Xte_t), 64)]).numpy()
            model.train()
            r = pearson_cols(P.transpose(0, 2, 1).reshape(-1, P.shape[1]),
                             Yte.transpose(0, 2, 1).reshape(-1, Yte.shape[1]))  # fmt: skip
            tl = float(np.mean(hist[-a.every :]))
            first = tl if first is None else first
            print(f"step {step:5d} train_loss {tl:.4f} test_r {np.nanmean(r):.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    out = {"train_loss_first": first, "train_loss_last": tl, "test_r": float(np.nanmean(r))}
    out["frame_r"] = [
        round(float(np.nanmean(pearson_cols(P[:, :, f], Yte[:, :, f]))), 3) for f in range(15)
    ]
    if ridge_frame_r is not None:
        out["ridge_frame_r"] = [round(v, 3) for v in ridge_frame_r]
    if hasattr(model, "hrf"):
        out["hrf_peak_s"] = model.hrf.peak_time(0.05).numpy().round(2).tolist()
    if a.bids and hasattr(model, "hrf"):
        from brainxl.metrics import load_true_hrfs

        dt = 0.05
        true = np.mean([load_true_hrfs(a.bids, s, dt) for s in train], axis=0)
        learned = model.hrf.curves(dt).numpy()
        n = min(true.shape[1], learned.shape[1])
        tp, lp = true.argmax(1) * dt, learned.argmax(1) * dt
        out["true_peak_s"] = tp.round(2).tolist()
        out["peak_corr"] = float(np.corrcoef(tp, lp)[0, 1])
        out["shape_corr"] = float(
            np.mean([np.corrcoef(true[i, :n], learned[i, :n])[0, 1] for i in range(len(tp))])
        )
    print(out)
    return out


if __name__ == "__main__":
    main()
