"""The standard channel vocabulary maps every supported naming style onto one row."""

import pytest

from brainxl.channels import (
    UnknownChannelError,
    canonical_name,
    canonicalize,
    channel_indices,
    vocabulary,
)


def test_vocabulary_is_unique_and_covers_montages():
    import mne

    vocab = vocabulary()
    assert len(vocab) == len({v.upper() for v in vocab})
    for montage in ("biosemi64", "easycap-M1"):
        names = mne.channels.make_standard_montage(montage).ch_names
        assert len(channel_indices(names)) == len(names)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Fp1", "Fp1"),
        ("FP1", "Fp1"),
        ("EEG Fp1-REF", "Fp1"),
        ("EEG T3-LE", "T7"),
        ("T5", "P7"),
        ("fp1-f7", "Fp1-F7"),
        ("T3-C3", "T7-C3"),
        ("MEG 0113", "MEG0113"),
        ("MEG0113", "MEG0113"),
    ],
)
def test_canonical_name(raw, canonical):
    assert canonical_name(raw) == canonical


def test_legacy_and_modern_names_share_rows():
    assert channel_indices(["T3", "T4", "T5", "T6"]) == channel_indices(["T7", "T8", "P7", "P8"])


def test_unknown_channels_are_named_with_source_and_fix():
    with pytest.raises(UnknownChannelError) as err:
        canonicalize(["Cz", "Foo1", "STI 014"], source="sub-01_eeg.vhdr")
    msg = str(err.value)
    assert "Foo1" in msg and "STI 014" in msg and "sub-01_eeg.vhdr" in msg
    assert "rename_channels" in msg
    assert "Cz" not in msg.split(":")[1].split(".")[0]
