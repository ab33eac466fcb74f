import numpy as np
import pytest
import torch

from avs_depth_core.audio import (
    BATVISION_CHIRP,
    StftSettings,
    echo_spectrogram,
    echo_window,
    echo_window_samples,
    read_wav,
    resize_spectrogram,
    synthesize_chirp,
)


def test_chirp_is_3ms_at_44k1():
    wave = synthesize_chirp()
    assert wave.shape == (132,)  # the BITD 3ms_sweep.wav has 132 samples
    assert np.abs(wave).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(wave, 4096))
    freqs = np.fft.rfftfreq(4096, 1 / BATVISION_CHIRP.sample_rate)
    band = spectrum[(freqs > 1000) & (freqs < 18000)].mean()
    assert band > 5 * spectrum[freqs > 21000].mean()


def test_window_matches_batvision_loader():
    # BatVision's BV2 loader: int(2 * max_depth / 340 * sr) samples.
    assert echo_window_samples(30.0, 44100, 340.0) == 7782
    assert echo_window_samples(12.0, 44100, 340.0) == 3112
    rec = np.arange(2 * 100, dtype=np.float32).reshape(2, 100)
    out = echo_window(rec, 44100, max_depth=1.0, emission_offset=10, speed_of_sound=340.0)
    assert out.shape == (2, 259) and out[0, 0] == 10 and out[0, 90:].sum() == 0
    with pytest.raises(ValueError, match="emission offset"):
        echo_window(rec, 44100, 1.0, emission_offset=101)


def test_stft_shape_and_window_match_torch_spectrogram_definition():
    x = np.random.default_rng(0).standard_normal((2, 7782)).astype(np.float32)
    spec = echo_spectrogram(x)
    assert spec.shape == (2, 257, 487)
    # One frame by hand: periodic Hann of 64 centred inside n_fft 512, reflect-padded signal.
    s = StftSettings()
    padded = np.pad(x[0], s.n_fft // 2, mode="reflect")
    win = np.zeros(s.n_fft)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(64) / 64)
    win[(512 - 64) // 2:(512 - 64) // 2 + 64] = hann
    frame = padded[10 * 16:10 * 16 + 512] * win
    np.testing.assert_allclose(np.abs(np.fft.rfft(frame)), spec[0, :, 10].numpy(), rtol=1e-4, atol=1e-4)
    assert resize_spectrogram(spec, (256, 512)).shape == (2, 256, 512)
    assert resize_spectrogram(spec[None], (64, 64)).shape == (1, 2, 64, 64)


def test_stft_rejects_bad_shapes():
    with pytest.raises(ValueError, match="channels"):
        echo_spectrogram(torch.zeros(10))
    with pytest.raises(ValueError, match="too short"):
        echo_spectrogram(np.zeros((2, 100)))


def test_real_batvision_wav_is_int32_scaled(bv2_sample):
    samples, rate = read_wav(bv2_sample / "audio_47.wav")
    assert rate == 44100 and samples.shape == (2, 20000) and samples.dtype == np.float32
    peaks = np.abs(samples).max(axis=1)
    assert 0.5 < peaks.min() and peaks.max() < 0.8  # 0.60 / 0.75 of full scale


def test_read_wav_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        read_wav(tmp_path / "nothere.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="bad.wav"):
        read_wav(bad)


def test_echo_features_shape_and_rate_check():
    from avs_depth_core.audio import echo_features

    x = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 20000)).astype(np.float32)
    out = echo_features(x, 44100, expected_rate=44100, max_depth=30.0, size=(256, 512), emission_offset=100)
    assert out.shape == (2, 256, 512) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="sample rate 16000 Hz, expected 44100"):
        echo_features(x, 16000, expected_rate=44100, max_depth=30.0, size=(8, 8), where="echo")
    x[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        echo_features(x, 44100, expected_rate=44100, max_depth=30.0, size=(8, 8))
