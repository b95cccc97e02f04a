"""Whisper log-mel features in numpy, following Hugging Face's WhisperFeatureExtractor numpy path
(`_np_extract_fbank_features` over `audio_utils.spectrogram` and `mel_filter_bank`) step for step:

1. pad (zeros, `padding_value`) or truncate the float32 waveform to `n_samples`;
2. centre it: reflect-pad n_fft // 2 samples on both sides; promote to float64;
3. frames of n_fft samples every hop_length, times a periodic Hann window (np.hanning(n_fft + 1)[:-1]);
4. rfft of each frame, stored as complex64 (as HF's buffer is), power = |X|² in float64;
5. mel = max(1e-10, filters.T @ power) with slaney-scale, slaney-normalized triangular filters over
   0..8000 Hz (filters in float64); log10; cast to float32;
6. drop the last frame; x = max(x, x.max() - 8); x = (x + 4) / 4.
"""

import numpy as np

SAMPLING_RATE = 16000
N_FFT = 400
HOP = 160


def hertz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    mels = 3.0 * f / 200.0
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-30) / 1000.0) * (27.0 / np.log(6.4)), mels)


def mel_to_hertz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f = 200.0 * m / 3.0
    log = m >= 15.0
    return np.where(log, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), f)


def mel_filter_bank(num_frequency_bins, num_mel_filters, min_frequency, max_frequency, sampling_rate):
    """[num_frequency_bins, num_mel_filters], slaney scale and slaney norm."""
    mel_min = hertz_to_mel_slaney(min_frequency)
    mel_max = hertz_to_mel_slaney(max_frequency)
    mel_freqs = np.linspace(mel_min, mel_max, num_mel_filters + 2)
    filter_freqs = mel_to_hertz_slaney(mel_freqs)
    fft_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)
    filter_diff = np.diff(filter_freqs)
    slopes = np.expand_dims(filter_freqs, 0) - np.expand_dims(fft_freqs, 1)
    down = -slopes[:, :-2] / filter_diff[:-1]
    up = slopes[:, 2:] / filter_diff[1:]
    filters = np.maximum(np.zeros(1), np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2:num_mel_filters + 2] - filter_freqs[:num_mel_filters])
    return filters * np.expand_dims(enorm, 0)


class WhisperFeatures:
    def __init__(self, feature_size, chunk_length):
        self.feature_size = feature_size
        self.chunk_length = chunk_length
        self.n_samples = chunk_length * SAMPLING_RATE
        self.nb_max_frames = self.n_samples // HOP
        self.filters = mel_filter_bank(1 + N_FFT // 2, feature_size, 0.0, 8000.0, SAMPLING_RATE)
        self.window = np.hanning(N_FFT + 1)[:-1]

    def config(self):
        return {
            "feature_extractor_type": "WhisperFeatureExtractor",
            "feature_size": self.feature_size,
            "sampling_rate": SAMPLING_RATE,
            "hop_length": HOP,
            "n_fft": N_FFT,
            "chunk_length": self.chunk_length,
            "n_samples": self.n_samples,
            "nb_max_frames": self.nb_max_frames,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": False,
        }

    def __call__(self, waveform):
        """float waveform (16 kHz, [-1, 1]) -> float32 [feature_size, nb_max_frames]."""
        x = np.asarray(waveform, dtype=np.float32)[:self.n_samples]
        x = np.pad(x, (0, self.n_samples - len(x)), constant_values=0.0)
        x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect").astype(np.float64)
        n_frames = 1 + (len(x) - N_FFT) // HOP
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
        # pocketfft transforms each row of a 2-D input exactly as it would a 1-D frame
        spec = np.fft.rfft(x[idx] * self.window, axis=-1).astype(np.complex64)
        power = np.abs(spec, dtype=np.float64) ** 2.0
        mel = np.maximum(1e-10, np.dot(self.filters.T, power.T))
        log_spec = np.asarray(np.log10(mel), np.float32)[:, :-1]
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


def reference_loop(fe, waveform):
    """HF's frame-by-frame loop, for checking the vectorized version."""
    x = np.asarray(waveform, dtype=np.float32)[:fe.n_samples]
    x = np.pad(x, (0, fe.n_samples - len(x)))
    x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect").astype(np.float64)
    n_frames = int(1 + np.floor((x.size - N_FFT) / HOP))
    spec = np.empty((n_frames, N_FFT // 2 + 1), dtype=np.complex64)
    buf = np.zeros(N_FFT)
    for f in range(n_frames):
        buf[:] = x[f * HOP:f * HOP + N_FFT]
        buf *= fe.window
        spec[f] = np.fft.rfft(buf)
    power = np.abs(spec, dtype=np.float64) ** 2.0
    mel = np.maximum(1e-10, np.dot(fe.filters.T, power.T))
    log_spec = np.asarray(np.log10(mel), np.float32)[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
