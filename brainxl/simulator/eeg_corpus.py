"""``simulate_eeg_corpus``: many subjects of EEG without BOLD, for pretraining corpora.

The EEG side of the EEG-fMRI simulator, made fast: one sphere head model and leadfield per
montage (built once, not per subject), parcel activity from
:func:`~brainxl.simulator.activity.simulate_activity` (FFT-shaped oscillations on a 1/f
background), projected through the leadfield with per-subject parcel gains, plus spatially
correlated 1/f brain noise, line noise and sensor noise, all as matrix products. Subjects
cycle through the montages and native sampling rates so a corpus mixes them:

* ``biosemi32``, ``biosemi64``, ``easycap-M1`` (MNE montages, BrainVision files);
* ``clinical19``: the 19 electrodes of the 10-20 system with clinical labels
  (``EEG T3-REF``, as in TUH recordings), written as EDF.

Written as BIDS EEG (``sub-*/eeg``), no ``func/`` and no derivatives; shard it with
``brainxl shard OUT SHARDS --eeg-only``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainxl.simulator import bids_io
from brainxl.simulator.activity import pink_noise, simulate_activity
from brainxl.simulator.dataset import legacy_name
from brainxl.simulator.headmodel import (
    TemplateHead,
    build_template,
    subject_head,
    with_electrodes,
)

#: The 19 electrodes of a clinical 10-20 recording (10-10 names; written with clinical
#: labels). All are in ``biosemi64``, whose head model they share.
CLINICAL19 = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip
#: Montage name -> (MNE montage of its head model, channel subset or None for all, format).
MONTAGES: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    "biosemi32": ("biosemi32", None, "BrainVision"),
    "biosemi64": ("biosemi64", None, "BrainVision"),
    "easycap-M1": ("easycap-M1", None, "BrainVision"),
    "clinical19": ("biosemi64", CLINICAL19, "EDF"),
}
DEFAULT_MONTAGES = ("biosemi32", "biosemi64", "easycap-M1", "clinical19")
DEFAULT_RATES = (250.0, 500.0, 512.0, 1000.0)


@dataclass
class MontageModel:
    """What every subject of one montage shares (built once by :func:`montage_model`).

    Attributes
    ----------
    template : TemplateHead
        Head model, parcels and their centroids.
    ch_names : list of str
        Standard channel names.
    gain : ndarray, shape (n_channels, n_parcels)
        Sensor response (V) to unit activity of each parcel.
    noise_mix : ndarray, shape (n_channels, n_channels)
        Square root of the sensor covariance of 300 random dipoles (unit mean variance).
    montage : mne.channels.DigMontage
        Electrode positions.
    fmt : str
        File format the corpus writes (``"BrainVision"`` or ``"EDF"``).
    legacy : bool
        Written with clinical labels (``EEG T3-REF``).
    """

    template: TemplateHead
    ch_names: list[str]  # standard names
    gain: np.ndarray  # (n_channels, n_parcels), V per unit activity per A*m
    noise_mix: np.ndarray  # (n_channels, n_channels): sensor covariance square root
    montage: object  # mne.channels.DigMontage of the electrodes (standard names)
    fmt: str
    legacy: bool


@dataclass
class CorpusSummary:
    """What :func:`simulate_eeg_corpus` wrote.

    Attributes
    ----------
    out : Path
        BIDS root.
    subjects : list of str
        Labels without ``sub-``.
    montage, sfreq : dict of str
        Each subject's montage name and native sampling rate.
    minutes : float
        Recording length per subject.
    timings : dict of str to float
        Seconds per stage (``"models"``, ``"subjects"``, ``"total"``).
    """

    out: Path
    subjects: list[str]
    montage: dict[str, str] = field(default_factory=dict)
    sfreq: dict[str, float] = field(default_factory=dict)
    minutes: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def format(self) -> str:
        """A short human-readable report (one line per montage and rate)."""
        groups: dict[tuple[str, float], int] = {}
        for s in self.subjects:
            key = (self.montage[s], self.sfreq[s])
            groups[key] = groups.get(key, 0) + 1
        total_min = self.minutes * len(self.subjects)
        lines = [
            f"simulated EEG-only BIDS corpus: {self.out}",
            f"  {len(self.subjects)} subjects x {self.minutes:g} min = {total_min / 60:.2f} h",
        ]
        for (mont, rate), n in sorted(groups.items()):
            lines.append(f"  {mont:<11} {rate:>6g} Hz: {n} subject(s)")
        t = self.timings.get("total", 0.0)
        rate = total_min / t if t > 0 else 0.0
        lines.append(
            f"  elapsed {t:.1f} s (head models {self.timings.get('models', 0.0):.1f} s), "
            f"{rate:.1f} recorded minutes per second"
        )
        return "\n".join(lines)


def _parse_list(values: Sequence[str] | str, what: str) -> list[str]:
    if isinstance(values, str):
        values = values.split(",")
    out = [v.strip() for v in values if v.strip()]
    if not out:
        raise ValueError(f"{what}: give at least one value")
    return out


def _check(
    out: Path,
    n_subjects: int,
    minutes: float,
    montages: list[str],
    rates: list[float],
    task: str,
    overwrite: bool,
) -> None:
    if not 1 <= n_subjects <= 9999:
        raise ValueError(f"n_subjects={n_subjects}: choose 1..9999 subjects")
    if minutes <= 0:
        raise ValueError(f"minutes={minutes}: the recording length must be positive")
    unknown = [m for m in montages if m not in MONTAGES]
    if unknown:
        raise ValueError(f"montages {unknown} unknown: choose from {', '.join(MONTAGES)}")
    low = [r for r in rates if r < 100.0]
    if low:
        raise ValueError(f"rates {low}: use at least 100 Hz (gamma is simulated at ~40 Hz)")
    bids_io.check_task(task)
    bids_io.check_output(out, overwrite)


def montage_model(
    name: str, n_parcels: int, rng: np.random.Generator, brain: TemplateHead | None = None
) -> MontageModel:
    """Head model, parcel gains and noise mixing of montage ``name`` (:data:`MONTAGES`).

    ``brain``: the sources and parcels to record (:func:`~brainxl.simulator.headmodel.
    with_electrodes` puts the montage on it); None draws a brain for this montage.
    """
    import mne

    mne_name, subset, fmt = MONTAGES[name]
    if brain is None:
        template = build_template(mne_name, n_parcels, rng=rng)
    else:
        template = with_electrodes(brain, mne_name)
    head = subject_head(template, 250.0, rng)
    names = list(head.info["ch_names"])
    pick = [names.index(c) for c in subset] if subset else list(range(len(names)))
    gain = head.parcel_gain[pick]
    # spatially correlated background: sensor covariance of 300 random 1/f dipoles
    L = head.fwd["sol"]["data"]
    rows = {n: k for k, n in enumerate(head.fwd["sol"]["row_names"])}
    L = L[[rows[names[k]] for k in pick]]
    n_src = L.shape[1] // 3
    idx = rng.choice(n_src, size=min(300, n_src), replace=False)
    ori = rng.standard_normal((len(idx), 3))
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    Lb = np.einsum("csk,sk->cs", L.reshape(L.shape[0], n_src, 3)[:, idx, :], ori)
    w, V = np.linalg.eigh(Lb @ Lb.T)
    mix = V * np.sqrt(np.clip(w, 0.0, None))
    mix /= np.sqrt((mix**2).sum() / len(pick))  # unit mean variance per channel
    montage = mne.pick_info(head.info, pick).get_montage()
    return MontageModel(
        template=template,
        ch_names=[names[k] for k in pick],
        gain=gain,
        noise_mix=mix,
        montage=montage,
        fmt=fmt,
        legacy=subset is not None,
    )


def simulate_eeg_subject(
    model: MontageModel, sfreq: float, n_times: int, rng: np.random.Generator, line_freq: float
) -> np.ndarray:
    """One subject's EEG (volts), shape (n_channels, n_times), average reference.

    Parcel activity through the montage's leadfield with per-subject parcel gains, scaled
    to a log-normal RMS around 17 uV, plus 1/f brain noise (35 %), line noise at
    ``line_freq`` (a few uV, per-channel amplitude) and 1 uV white sensor noise.
    """
    tpl = model.template
    alpha = float(rng.uniform(8.5, 11.5))
    act = simulate_activity(rng, tpl.centroids, tpl.r0, n_times, sfreq, alpha, decim=25)
    src = act.activity * rng.lognormal(0.0, 0.3, tpl.n_parcels).astype(np.float32)[:, None]
    del act
    sig = model.gain.astype(np.float32) @ src
    del src
    sig -= sig.mean(axis=0, keepdims=True)
    rms = 17e-6 * float(rng.lognormal(0.0, 0.15))
    sig *= rms / np.sqrt(np.mean(sig**2))
    n_ch = sig.shape[0]
    expo = np.full(n_ch, float(rng.uniform(1.0, 2.0)))
    sig += (0.35 * rms) * (
        model.noise_mix.astype(np.float32) @ pink_noise(rng, n_ch, n_times, sfreq, expo)
    )
    t = np.arange(n_times) / sfreq
    line = np.sin(2 * np.pi * line_freq * t + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    sig += (rng.uniform(0.5, 4.0, n_ch).astype(np.float32) * 1e-6)[:, None] * line[None, :]
    sig += 1e-6 * rng.standard_normal(sig.shape, dtype=np.float32)
    sig -= sig.mean(axis=0, keepdims=True)
    return sig


def simulate_eeg_corpus(
    out: str | Path,
    n_subjects: int = 8,
    minutes: float = 5.0,
    seed: int = 0,
    *,
    montages: Sequence[str] | str = DEFAULT_MONTAGES,
    rates: Sequence[float] | str = DEFAULT_RATES,
    n_parcels: int = 32,
    brain: TemplateHead | None = None,
    brain_name: str | None = None,
    task: str = "rest",
    line_freq: float = 50.0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CorpusSummary:
    """Simulate an EEG-only pretraining corpus and write it as BIDS (no BOLD).

    Parameters
    ----------
    out : str or Path
        BIDS root to create (must be empty or missing unless ``overwrite``).
    n_subjects : int
        Subjects ``01``.. (zero-padded to the width of ``n_subjects``, at least 2).
    minutes : float
        Recording length per subject.
    seed : int
        Everything is a deterministic function of the arguments.
    montages : sequence of str or comma-separated str
        Names from :data:`MONTAGES`; subject ``i`` gets ``montages[i % M]``.
    rates : sequence of float or comma-separated str
        Native sampling rates (Hz); subject ``i`` gets ``rates[(i + i // M) % R]``, so
        montages and rates mix.
    n_parcels : int
        Parcels of the source model (ignored with ``brain``).
    brain : TemplateHead, optional
        One brain for every montage (e.g. the population of an EEG-fMRI dataset,
        :func:`brainxl.simulator.truth.dataset_brain`); by default each montage gets a
        brain of its own.
    brain_name : str, optional
        Words naming where ``brain`` comes from, put in parentheses in the corpus README
        (``brainxl simulate --brain-of BIDS`` passes ``"those of BIDS"``); only with
        ``brain``.
    task : str
        BIDS task label.
    line_freq : float
        Power-line frequency (Hz) of the simulated line noise and the sidecars.
    overwrite : bool
        Allow writing into a non-empty ``out``.
    progress : callable, optional
        Called with one line per montage model and per subject.

    Returns
    -------
    summary : CorpusSummary
    """
    import mne

    out = Path(out)
    mont = _parse_list(montages, "montages")
    texts = rates if isinstance(rates, str) else [str(r) for r in rates]
    try:
        rate_list = [float(r) for r in _parse_list(texts, "rates")]
    except ValueError as err:
        raise ValueError(f"rates={rates!r}: {err}; give numbers in Hz (250,500)") from None
    _check(out, n_subjects, minutes, mont, rate_list, task, overwrite)
    if brain_name is not None and brain is None:
        raise ValueError("brain_name names the origin of `brain`; pass brain= as well or drop it")
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    models: dict[str, MontageModel] = {}
    for k, name in enumerate(dict.fromkeys(mont)):
        models[name] = montage_model(
            name, n_parcels, np.random.default_rng(np.random.SeedSequence([seed, 2, k])), brain
        )
        say(f"head model {name}: {len(models[name].ch_names)} electrodes")
    t_models = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(n_subjects)))
    summary = CorpusSummary(out=out, subjects=[], minutes=float(minutes))
    for i in range(n_subjects):
        sub = f"{i + 1:0{width}d}"
        name = mont[i % len(mont)]
        sfreq = rate_list[(i + i // len(mont)) % len(rate_list)]
        model = models[name]
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3, i]))
        n_times = int(round(minutes * 60.0 * sfreq))
        eeg = simulate_eeg_subject(model, sfreq, n_times, rng, line_freq)
        info = mne.create_info(model.ch_names, float(sfreq), "eeg")
        info.set_montage(model.montage)
        raw = mne.io.RawArray(eeg, info, verbose=False)
        del eeg
        raw.info["line_freq"] = float(line_freq)
        if model.legacy:
            raw.rename_channels({n: legacy_name(n) for n in raw.ch_names})
        bids_io.write_raw(raw, out, sub, task, "1", model.fmt, "eeg")
        del raw
        summary.subjects.append(sub)
        summary.montage[sub] = name
        summary.sfreq[sub] = sfreq
        say(f"sub-{sub}: {name} at {sfreq:g} Hz, {minutes:g} min")
    shared = None if brain is None else (brain_name or "given by the caller")
    _write_description(out, n_subjects, seed, mont, rate_list, shared_brain=shared)
    summary.timings = {
        "models": t_models,
        "subjects": time.perf_counter() - t0 - t_models,
        "total": time.perf_counter() - t0,
    }
    return summary


def _write_description(
    out: Path,
    n_subjects: int,
    seed: int,
    montages: list[str],
    rates: list[float],
    shared_brain: str | None = None,
) -> None:
    bids_io.write_raw_description(out, "brainxl simulated EEG pretraining corpus", seed)
    brains = (
        f"every montage records the same population of brains ({shared_brain})"
        if shared_brain
        else "each montage records a brain of its own"
    )
    (out / "README").write_text(
        "brainxl simulated EEG pretraining corpus\n"
        "========================================\n\n"
        f"{bids_io.SIMULATED_NOTE}\n\n"
        f"{n_subjects} subjects of resting-state EEG without BOLD; montages "
        f"{', '.join(montages)}; native rates {', '.join(f'{r:g}' for r in rates)} Hz; "
        f"{brains}.\n"
    )
