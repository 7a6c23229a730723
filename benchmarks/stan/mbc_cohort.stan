// The hierarchical cohort model of ctcdyn for the mbc spec (models/mbc.toml), written in Stan
// as the baseline of benchmarks/fit_vs_stan.py. It is ctcdyn.inference.CountModel with
// population=None and the Analytic engine, term for term:
//
// - five patient-level parameters X (metastatic_burden0, growth_rate,
//   shedding_single_per_division, shedding_cluster_per_division, kill_rate), non-centred on the
//   log scale:
//   log X_i = log X_median + X_sd * X_z[i], X_median ~ the spec's lognormal prior,
//   X_sd ~ LogNormal(log between_patients, 0.5), X_z ~ Normal(0, 1);
// - nine population-level parameters with the spec's priors (lognormal, beta, uniform);
// - the dynamics: P0 = 0 (primary_burden0 is fixed at 0 in mbc), so the burden is the
//   metastatic burden alone, growing at the patient's growth_rate g (mbc declares no
//   metastatic_growth_rate),
//       B(t) = M0 exp((g + a) t - K(t)),  K(t) = sum_k kill * dose_k (1 - e^{-r d_k(t)}) / r,
//   with d_k(t) the days of slot k given by t, r the resistance rate and
//   a = eps_s sigma_s + eps_c sigma_c the daily-mean seeding rate per cell (~1e-10/day here,
//   kept for exactness; set include_seeding = 0 to drop it);
// - shedding per cell division: sigma_s = shedding_single_per_division * g and
//   sigma_c = shedding_cluster_per_division * g per cell per day (division rate = g: mbc
//   declares no death_rate);
// - single CTCs and clusters in the whole circulation from the exact periodic solution of
//   dS/dt = sigma_s B c(t) - k_s S: with c = sum_n b_n cos(n (phi - phi_peak)) (von Mises,
//   b_n from a 64-point DFT as in ctcdyn.dynamics.Circadian.harmonics, n = 0..H),
//       S = sigma_s B sum_n b_n (k_s cos n(phi - phi_p) + w_n sin n(phi - phi_p)) / (k_s^2 + w_n^2)
//   with w_n = 2 pi n per day; cos/sin n(phi - phi_p) are expanded so that the clock-hour
//   terms are data and only the peak's cos/sin are computed per gradient;
// - expected counts mu_s = recovery v/V max(S, 0) + background v, mu_c = eta_c v/V max(C, 0),
//   floored at 1e-10, and NB2 (neg_binomial_2, concentration = dispersion) likelihoods.
//
// Every prior and likelihood term uses target += (normalising constants kept) so that
// log_prob matches NumPyro's potential energy exactly; benchmarks/fit_vs_stan.py checks it.
data {
  int<lower=1> N;                         // patients
  int<lower=1> D;                         // draws (long format, any observed count)
  int<lower=1> K;                         // cytotoxic treatment slots
  int<lower=0> H;                         // highest circadian harmonic
  int<lower=1> G;                         // DFT grid points per day
  array[D] int<lower=1, upper=N> patient;
  vector[D] t;                            // days since midnight of the baseline day
  vector[D] fraction;                     // volume / blood volume
  vector[D] background;                   // false positives expected: background_per_ml * volume
  vector[D] cluster_fraction;             // cluster recovery * volume / blood volume
  matrix[D, K] exposure_days;             // clip(t - start_k, 0, end_k - start_k)
  matrix[D, K] dose;                      // relative dose of slot k (0: empty slot)
  matrix[D, H + 1] cos_hour;              // cos(n phi), phi = 2 pi hour / 24
  matrix[D, H + 1] sin_hour;              // sin(n phi)
  matrix[H + 1, G] dft;                   // b = dft * c(theta_grid)
  vector[G] cos_grid;                     // cos(theta_j) on the DFT grid
  int<lower=0> n_ctc;
  array[n_ctc] int<lower=1, upper=D> ctc_draw;
  array[n_ctc] int<lower=0> ctc;
  int<lower=0> n_clusters;
  array[n_clusters] int<lower=1, upper=D> clusters_draw;
  array[n_clusters] int<lower=0> clusters;
  // fixed parameters and units (internal = spec value * unit)
  real unit_growth_rate;                  // 1/day per spec unit of growth_rate
  real unit_burden;                       // cells per spec unit of metastatic_burden0
  real unit_half_life;                    // days per spec unit of the half-lives
  // priors of the patient-level parameters, in the order of the comment above
  vector[5] median_log_location;
  vector<lower=0>[5] median_sd_log;
  vector<lower=0>[5] between_patients;
  real<lower=0> sd_prior_sd_log;
  // priors of the population-level parameters
  vector[2] half_life_prior;              // (log median, sd_log) of half_life_single
  vector[2] half_life_cluster_prior;
  vector[2] efficiency_single_prior;      // beta (a, b)
  vector[2] efficiency_cluster_prior;
  vector[2] circadian_amplitude_prior;    // lognormal
  real peak_low;                          // uniform (low, high)
  real<lower=peak_low> peak_high;
  vector[2] resistance_rate_prior;        // lognormal
  vector[2] recovery_prior;               // beta
  vector[2] dispersion_prior;             // lognormal
  int<lower=0, upper=1> include_prior;
  int<lower=0, upper=1> include_likelihood;
  int<lower=0, upper=1> include_seeding;
}
transformed data {
  vector[H + 1] w = 2 * pi() * linspaced_vector(H + 1, 0, H);
  vector[H + 1] w2 = square(w);
  vector[H + 1] n_index = linspaced_vector(H + 1, 0, H);
}
parameters {
  real<lower=0> metastatic_burden0_median;
  real<lower=0> metastatic_burden0_sd;
  vector[N] metastatic_burden0_z;
  real<lower=0> growth_rate_median;
  real<lower=0> growth_rate_sd;
  vector[N] growth_rate_z;
  real<lower=0> shedding_single_per_division_median;
  real<lower=0> shedding_single_per_division_sd;
  vector[N] shedding_single_per_division_z;
  real<lower=0> shedding_cluster_per_division_median;
  real<lower=0> shedding_cluster_per_division_sd;
  vector[N] shedding_cluster_per_division_z;
  real<lower=0> half_life_single;
  real<lower=0> half_life_cluster;
  real<lower=0, upper=1> efficiency_single;
  real<lower=0, upper=1> efficiency_cluster;
  real<lower=0> circadian_amplitude;
  real<lower=peak_low, upper=peak_high> circadian_peak_hour;
  real<lower=0> kill_rate_median;
  real<lower=0> kill_rate_sd;
  vector[N] kill_rate_z;
  real<lower=0> resistance_rate;
  real<lower=0, upper=1> recovery;
  real<lower=0> dispersion;
}
model {
  if (include_prior) {
    vector[5] medians = [metastatic_burden0_median, growth_rate_median,
                         shedding_single_per_division_median,
                         shedding_cluster_per_division_median, kill_rate_median]';
    vector[5] sds = [metastatic_burden0_sd, growth_rate_sd, shedding_single_per_division_sd,
                     shedding_cluster_per_division_sd, kill_rate_sd]';
    target += lognormal_lpdf(medians | median_log_location, median_sd_log);
    target += lognormal_lpdf(sds | log(between_patients), sd_prior_sd_log);
    target += std_normal_lpdf(metastatic_burden0_z);
    target += std_normal_lpdf(growth_rate_z);
    target += std_normal_lpdf(shedding_single_per_division_z);
    target += std_normal_lpdf(shedding_cluster_per_division_z);
    target += std_normal_lpdf(kill_rate_z);
    target += lognormal_lpdf(half_life_single | half_life_prior[1], half_life_prior[2]);
    target += lognormal_lpdf(half_life_cluster | half_life_cluster_prior[1],
                             half_life_cluster_prior[2]);
    target += beta_lpdf(efficiency_single | efficiency_single_prior[1],
                        efficiency_single_prior[2]);
    target += beta_lpdf(efficiency_cluster | efficiency_cluster_prior[1],
                        efficiency_cluster_prior[2]);
    target += lognormal_lpdf(circadian_amplitude | circadian_amplitude_prior[1],
                             circadian_amplitude_prior[2]);
    target += uniform_lpdf(circadian_peak_hour | peak_low, peak_high);
    target += lognormal_lpdf(resistance_rate | resistance_rate_prior[1],
                             resistance_rate_prior[2]);
    target += beta_lpdf(recovery | recovery_prior[1], recovery_prior[2]);
    target += lognormal_lpdf(dispersion | dispersion_prior[1], dispersion_prior[2]);
  }
  if (include_likelihood) {
    // patient values (internal units); shedding per cell per day = per division x g
    vector[N] log_m0 = log(metastatic_burden0_median * unit_burden)
                       + metastatic_burden0_sd * metastatic_burden0_z;
    vector[N] log_g = log(growth_rate_median * unit_growth_rate)
                      + growth_rate_sd * growth_rate_z;
    vector[N] g = exp(log_g);
    vector[N] log_sigma_s = log(shedding_single_per_division_median)
                            + shedding_single_per_division_sd * shedding_single_per_division_z
                            + log_g;
    vector[N] log_sigma_c = log(shedding_cluster_per_division_median)
                            + shedding_cluster_per_division_sd * shedding_cluster_per_division_z
                            + log_g;
    vector[N] kill = exp(log(kill_rate_median) + kill_rate_sd * kill_rate_z);
    real k_s = log2() / (half_life_single * unit_half_life);
    real k_c = log2() / (half_life_cluster * unit_half_life);
    // circadian harmonics b_n (mean-one von Mises curve) and the peak's phase
    vector[H + 1] b = dft * exp(circadian_amplitude * cos_grid
                                - log_modified_bessel_first_kind(0, circadian_amplitude));
    real phi_p = 2 * pi() * circadian_peak_hour / 24;
    vector[H + 1] cp = cos(n_index * phi_p);
    vector[H + 1] sp = sin(n_index * phi_p);
    vector[H + 1] coef_s = b ./ (square(k_s) + w2);
    vector[H + 1] coef_c = b ./ (square(k_c) + w2);
    vector[D] rhythm_s = cos_hour * (coef_s .* (k_s * cp - w .* sp))
                         + sin_hour * (coef_s .* (k_s * sp + w .* cp));
    vector[D] rhythm_c = cos_hour * (coef_c .* (k_c * cp - w .* sp))
                         + sin_hour * (coef_c .* (k_c * sp + w .* cp));
    // kill integral per draw, seeding per cell (per patient) and the burden
    vector[D] kill_integral = ((-expm1(-resistance_rate * exposure_days)) .* dose)
                              * rep_vector(1.0 / resistance_rate, K);
    vector[N] seeding = include_seeding
                        * (efficiency_single * exp(log_sigma_s)
                           + efficiency_cluster * exp(log_sigma_c));
    vector[D] log_burden = log_m0[patient] - kill[patient] .* kill_integral
                           + (g[patient] + seeding[patient]) .* t;
    vector[D] singles = exp(log_sigma_s[patient] + log_burden) .* rhythm_s;
    vector[D] clusters_in_blood = exp(log_sigma_c[patient] + log_burden) .* rhythm_c;
    vector[D] mu_s = fmax(recovery * fraction .* fmax(singles, 0) + background, 1e-10);
    vector[D] mu_c = fmax(cluster_fraction .* fmax(clusters_in_blood, 0), 1e-10);
    target += neg_binomial_2_lpmf(ctc | mu_s[ctc_draw], dispersion);
    target += neg_binomial_2_lpmf(clusters | mu_c[clusters_draw], dispersion);
  }
}
