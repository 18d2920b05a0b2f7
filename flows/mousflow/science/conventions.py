"""The measurement-equation conventions every kernel follows, written down once.

- Baselines p < q; uvw = position(q) - position(p), in metres, ICRS-aligned (u east, v north, w to source).
- Sky to visibility: V(u, v, w) = sum over the sky of I(l, m) exp(-2 pi i (u l + v m + w (n - 1))) with uvw in
  wavelengths and l increasing towards the east (RA), m towards the north. ducc0.wgridder's dirty2vis and
  vis2dirty implement exactly this equation when called with flip_w=True (its own w term has the opposite
  sign); its image array axis 0 is l, axis 1 is m.
- Antenna-based corruption of the parallel hands: D_pq = J_p V_pq conj(J_q), J = g(time) B(channel).
- Stokes I = (XX + YY) / 2 for linear feeds and (RR + LL) / 2 for circular ones.
"""

PHASE_SIGN = -1
DUCC0_FLIP_W = True
PARALLEL_HANDS = {("XX", "YY"), ("RR", "LL")}
