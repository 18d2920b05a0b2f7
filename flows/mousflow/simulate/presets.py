"""Simulation presets, from seconds-long CI data to cubes of thousands of channels."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SpectralWindowSetup:
    name: str
    centre_hz: float
    n_chan: int
    channel_width_hz: float
    line: bool = False
    """Carries the spectral line; excluded from the continuum sensitivity."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    n_antennas: int
    n_execution_blocks: int
    band: int
    spws: tuple[SpectralWindowSetup, ...]
    integration_s: float
    bandpass_scan_s: float
    flux_scan_s: float
    phase_scan_s: float
    target_scan_s: float
    n_cycles: int
    tsys_factor: float = 1.0
    """Actual / planned Tsys: >1 means the weather was worse than the proposal assumed."""
    atmospheric_phase_deg: float = 30.0
    n_dead_antennas: int = 1

    @property
    def n_baselines(self) -> int:
        return self.n_antennas * (self.n_antennas - 1) // 2

    @property
    def eb_duration_s(self) -> float:
        return (self.bandpass_scan_s + self.flux_scan_s + self.n_cycles * (self.phase_scan_s + self.target_scan_s)
                + self.phase_scan_s)

    @property
    def visibility_channels(self) -> int:
        """Rows x channels over the whole MOUS (each with len(correlations) products)."""
        n_int = round(self.eb_duration_s / self.integration_s)
        return self.n_execution_blocks * n_int * self.n_baselines * sum(s.n_chan for s in self.spws)


def _band3(n_cont: int, cont_width: float, n_line: int, line_width: float) -> tuple[SpectralWindowSetup, ...]:
    return (
        SpectralWindowSetup("spw0", 97.0e9, n_cont, cont_width),
        SpectralWindowSetup("spw1", 99.0e9, n_cont, cont_width),
        SpectralWindowSetup("spw2", 109.0e9, n_cont, cont_width),
        SpectralWindowSetup("spw3", 110.2e9, n_line, line_width, line=True),
    )


TINY = Preset(
    "tiny", "CI: 16 antennas, 1 EB, two windows, ~15 minutes; seconds to simulate, ~10 MB",
    n_antennas=16, n_execution_blocks=1, band=3,
    spws=(SpectralWindowSetup("spw0", 97.0e9, 16, 62.5e6),
          SpectralWindowSetup("spw1", 98.7e9, 32, 3.90625e6, line=True)),
    integration_s=10.0, bandpass_scan_s=60, flux_scan_s=40, phase_scan_s=30, target_scan_s=150, n_cycles=4,
)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        TINY,
        Preset(
            "small", "the embedded demo: 16 antennas, 2 EBs, band 6, four windows (160 channels)",
            n_antennas=16, n_execution_blocks=2, band=6,
            spws=(SpectralWindowSetup("spw0", 224.0e9, 32, 62.5e6),
                  SpectralWindowSetup("spw1", 226.0e9, 32, 62.5e6),
                  SpectralWindowSetup("spw2", 240.0e9, 32, 62.5e6),
                  SpectralWindowSetup("spw3", 230.5e9, 64, 1.953125e6, line=True)),
            integration_s=6.0, bandpass_scan_s=120, flux_scan_s=60, phase_scan_s=30, target_scan_s=240, n_cycles=4,
        ),
        Preset(
            "medium", "benchmarks: the full 43-antenna array, 1 EB, band 3, ~1.5 GB",
            n_antennas=43, n_execution_blocks=1, band=3,
            spws=_band3(64, 31.25e6, 64, 1.953125e6),
            integration_s=6.0, bandpass_scan_s=180, flux_scan_s=60, phase_scan_s=30, target_scan_s=300, n_cycles=6,
        ),
        Preset(
            "wide", "WSU-like: one window of 8192 channels, for channel-chunked cubes",
            n_antennas=12, n_execution_blocks=1, band=6,
            spws=(SpectralWindowSetup("spw0", 230.5e9, 8192, 0.2441406e6, line=True),),
            integration_s=10.0, bandpass_scan_s=60, flux_scan_s=30, phase_scan_s=30, target_scan_s=120, n_cycles=2,
        ),
        # the same observation as tiny, in worse weather than the proposal planned for
        replace(TINY, name="marginal", description="tiny observed in worse weather than planned (Tsys 1.7x): "
                "QA2 must fail on rms", tsys_factor=1.7),
    )
}
