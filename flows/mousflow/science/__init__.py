"""Science kernels: pure numpy/ducc0/astropy code with no Prefect, Kubernetes or object storage inside.

Conventions shared by every kernel (see `conventions`): visibilities V_pq for antennas p < q with
uvw = x_q - x_p, V = sum I(l, m) exp(-2 pi i (u l + v m + w (n - 1))) (ducc0's wgridder with flip_w=True), and
corrupted data D_pq = J_p V_pq J_q^*, J = gain(time) * bandpass(channel), per correlation XX, YY.
"""
