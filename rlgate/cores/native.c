/* The CPU gate kernels of the fused path: one call per time step does all of a step's gate math
 * in a single pass over the batch, instead of a dozen PyTorch ops that each read and write
 * [B, H] tensors. The matmuls stay in PyTorch (oneDNN/MKL), except for small and mid-sized
 * problems, whose whole time loop runs here (the *_sequence_* functions at the end), with this
 * file's own matmul or torch's BLAS sgemm passed in. See rlgate/cores/native.py
 * for how this file is compiled and loaded, and rlgate/cores/fused.py (NativeLSTMKernel,
 * NativeGRUKernel) for the loop that calls it. float32, row-major, every row contiguous.
 * The same library holds the agent's other CPU kernels, each beside its section's comment:
 * the one-hot and view maps (rlgate.agents.onehot), the acting step (rlgate.agents.fused_step)
 * and PPO's Categorical loss (rlgate.agents.ppo).
 *
 * Gate blocks (each H wide, in this order inside a row of G = k H pre-activations):
 *   LSTM_UNTIED [i, f, u, o]   c = f c_prev + i u
 *   LSTM_TIED   [f, u, o]      c = f c_prev + (1 - f) u
 *   LSTM_REFINE [r, f, u, o]   c = g c_prev + (1 - g) u,  g = f^2 + 2 r f (1 - f)
 *   GRU         [r, z, n]      h = z h_prev + (1 - z) n,  n = tanh(x_n + r (W_hn h + b_hn))
 *   URGRU       [r, z, n, rho] h = g h_prev + (1 - g) n,  g = z^2 + 2 rho z (1 - z)
 *   LSTM_MASTER [i, f, u, o, f~, i~] (ON-LSTM; f~, i~ are n = H / chunk wide):
 *               c = g c_prev + i^ u, w = F I, g = f w + (F - w), i^ = i w + (I - w),
 *               F = cumax(z_f~), I = 1 - cumax(z_i~), broadcast over chunks of units
 * and h = o tanh(c) for the LSTMs. u = tanh(z_u), every other gate a sigmoid.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* This thread's share [lo, hi) of n items (inside a parallel region; all of them outside). */
static void my_share(const int64_t n, int64_t *lo, int64_t *hi) {
  *lo = 0, *hi = n;
#ifdef _OPENMP
  const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
  *lo = n * me / parts, *hi = n * (me + 1) / parts;
#endif
}

/* Rows of a step are independent: from PARALLEL_MIN elements (B H) on, a step's rows are split
 * over torch's own OpenMP threads, when compiled with -fopenmp (native.py tries it first). Each
 * step function X(batch, hidden, ...) runs X_rows(lo, hi, hidden, ...) on its rows [lo, hi)
 * through SPLIT_ROWS; the whole-sequence loops, which split their rows themselves, call X_rows
 * directly, without entering a parallel region at every step. */
#define PARALLEL_MIN 8192
#ifdef _OPENMP
#define SPLIT_ROWS(call)                                             \
  _Pragma("omp parallel if (batch * hidden >= PARALLEL_MIN)") {      \
    int64_t lo_, hi_;                                                \
    my_share(batch, &lo_, &hi_);                                     \
    const int lo = (int)lo_, hi = (int)hi_;                          \
    call;                                                            \
  }
#else
#define SPLIT_ROWS(call)              \
  {                                   \
    const int lo = 0, hi = batch;     \
    call;                             \
  }
#endif

/* Whether this build splits rows over OpenMP threads (native.py logs and tests it). */
int native_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

enum { LSTM_UNTIED = 0, LSTM_TIED = 1, LSTM_REFINE = 2, LSTM_MASTER = 5 };

/* exp(x) for float32, vectorisable (no libm call): Cody-Waite reduction x = n ln2 + r and the
 * Cephes degree-6 polynomial for exp(r), then 2^n through the exponent bits. Relative error
 * about 2e-7 (1-2 ulp). The clamps keep 2^n finite and pass NaN through (a comparison with NaN
 * is false), so a non-finite input stays non-finite. */
static inline float exp_f(float x) {
  x = x > 88.3f ? 88.3f : x;
  x = x < -87.3f ? -87.3f : x;
  float n = __builtin_rintf(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

/* tanh(x) = 2 sigmoid(2x) - 1: absolute error about 1e-7. */
static inline float tanh_f(float x) { return 2.0f / (1.0f + exp_f(-2.0f * x)) - 1.0f; }

static inline __attribute__((always_inline)) void add_rows(const int n, const float *restrict x,
                                                            const float *restrict y,
                                                            float *restrict out) {
#pragma omp simd
  for (int j = 0; j < n; ++j) out[j] = x[j] + y[j];
}

/* One LSTM step. xw, hw: [B, G] the two parts of the pre-activations (W_ih x + b and W_hh h);
 * cp: [B, H] the cell state the step starts from (after any reset). Writes a: [B, G]
 * activations (u's block holds tanh(z_u)), c: [B, H] the new cell, tc: [B, H] tanh(c) and
 * h: [B, H] the output. */
static void lstm_forward_rows(int mode, int lo, int hi, int hidden, const float *xw,
                              const float *hw, float *a, const float *cp, float *c, float *tc,
                              float *h) {
  const int H = hidden;
  const int G = (mode == LSTM_TIED ? 3 : 4) * H;
  for (int b = lo; b < hi; ++b) {
    float *ab = a + (size_t)b * G;
    add_rows(G, xw + (size_t)b * G, hw + (size_t)b * G, ab); /* z, then activations in place */
    const float *zb = ab;
    const float *cpb = cp + (size_t)b * H;
    float *cb = c + (size_t)b * H, *tcb = tc + (size_t)b * H, *hb = h + (size_t)b * H;
    if (mode == LSTM_TIED) {
#pragma omp simd
      for (int j = 0; j < H; ++j) {
        float f = sigmoid_f(zb[j]), u = tanh_f(zb[H + j]), o = sigmoid_f(zb[2 * H + j]);
        ab[j] = f, ab[H + j] = u, ab[2 * H + j] = o;
        float cn = u + f * (cpb[j] - u);
        float t = tanh_f(cn);
        cb[j] = cn, tcb[j] = t, hb[j] = o * t;
      }
    } else if (mode == LSTM_REFINE) {
#pragma omp simd
      for (int j = 0; j < H; ++j) {
        float r = sigmoid_f(zb[j]), f = sigmoid_f(zb[H + j]);
        float u = tanh_f(zb[2 * H + j]), o = sigmoid_f(zb[3 * H + j]);
        ab[j] = r, ab[H + j] = f, ab[2 * H + j] = u, ab[3 * H + j] = o;
        float g = f * f + 2.0f * r * f * (1.0f - f);
        float cn = u + g * (cpb[j] - u);
        float t = tanh_f(cn);
        cb[j] = cn, tcb[j] = t, hb[j] = o * t;
      }
    } else {
#pragma omp simd
      for (int j = 0; j < H; ++j) {
        float i = sigmoid_f(zb[j]), f = sigmoid_f(zb[H + j]);
        float u = tanh_f(zb[2 * H + j]), o = sigmoid_f(zb[3 * H + j]);
        ab[j] = i, ab[H + j] = f, ab[2 * H + j] = u, ab[3 * H + j] = o;
        float cn = f * cpb[j] + i * u;
        float t = tanh_f(cn);
        cb[j] = cn, tcb[j] = t, hb[j] = o * t;
      }
    }
  }
}

void lstm_forward(int mode, int batch, int hidden, const float *xw, const float *hw, float *a,
                  const float *cp, float *c, float *tc, float *h) {
  SPLIT_ROWS(lstm_forward_rows(mode, lo, hi, hidden, xw, hw, a, cp, c, tc, h));
}

/* Backward of one LSTM row: the loops below are specialised per mode and per whether dy is
 * given (constant arguments of an always-inlined function), so that each one vectorises. */
static inline __attribute__((always_inline)) void lstm_backward_row(
    const int mode, const int have_dy, const int H, const float *restrict ab,
    const float *restrict cpb, const float *restrict tcb, const float *restrict dhb,
    const float *restrict dyb, float *restrict dcb, float *restrict dzb) {
  const int k = mode == LSTM_TIED ? 2 : 3; /* blocks before o */
  const float *a0 = ab, *a1 = ab + H, *a2 = ab + 2 * H, *ao = ab + k * H;
  float *d0 = dzb, *d1 = dzb + H, *d2 = dzb + 2 * H, *dout = dzb + k * H;
#pragma omp simd
  for (int j = 0; j < H; ++j) {
    float dht = have_dy ? dhb[j] + dyb[j] : dhb[j];
    float o = ao[j], t = tcb[j];
    float dct = dcb[j] + dht * o * (1.0f - t * t);
    dout[j] = dht * t * o * (1.0f - o);
    float cprev = cpb[j];
    if (mode == LSTM_TIED) {
      float f = a0[j], u = a1[j];
      d0[j] = dct * (cprev - u) * f * (1.0f - f);
      d1[j] = dct * (1.0f - f) * (1.0f - u * u);
      dcb[j] = dct * f;
    } else if (mode == LSTM_REFINE) {
      float r = a0[j], f = a1[j], u = a2[j];
      float df = f * (1.0f - f);
      float g = f * f + 2.0f * r * df;
      float dg = 2.0f * dct * (cprev - u);
      d0[j] = dg * df * r * (1.0f - r);
      d1[j] = dg * (f + r - 2.0f * r * f) * df;
      d2[j] = dct * (1.0f - g) * (1.0f - u * u);
      dcb[j] = dct * g;
    } else {
      float i = a0[j], f = a1[j], u = a2[j];
      d0[j] = dct * u * i * (1.0f - i);
      d1[j] = dct * cprev * f * (1.0f - f);
      d2[j] = dct * i * (1.0f - u * u);
      dcb[j] = dct * f;
    }
  }
}

/* Backward of one LSTM step. dh: [B, H] dL/dh_t through the recurrence, dy: [B, H] dL/dh_t from
 * the output (or NULL); dc: [B, H] on entry dL/dc_t through c_{t+1} (g_{t+1} already applied),
 * on exit the same for step t-1 (dL/dc_t g_t). Writes dz: [B, G] dL/d(pre-activations). */
static void lstm_backward_rows(int mode, int lo, int hi, int hidden, const float *a,
                               const float *cp, const float *tc, const float *dh,
                               const float *dy, float *dc, float *dz) {
  const int H = hidden;
  const size_t G = (size_t)(mode == LSTM_TIED ? 3 : 4) * H;
  for (int b = lo; b < hi; ++b) {
    const float *ab = a + b * G, *cpb = cp + (size_t)b * H, *tcb = tc + (size_t)b * H;
    const float *dhb = dh + (size_t)b * H, *dyb = dy ? dy + (size_t)b * H : NULL;
    float *dcb = dc + (size_t)b * H, *dzb = dz + b * G;
#define LSTM_BWD(M)                                                         \
  if (dy)                                                                   \
    lstm_backward_row(M, 1, H, ab, cpb, tcb, dhb, dyb, dcb, dzb);          \
  else                                                                      \
    lstm_backward_row(M, 0, H, ab, cpb, tcb, dhb, dyb, dcb, dzb);
    if (mode == LSTM_TIED) {
      LSTM_BWD(LSTM_TIED)
    } else if (mode == LSTM_REFINE) {
      LSTM_BWD(LSTM_REFINE)
    } else {
      LSTM_BWD(LSTM_UNTIED)
    }
#undef LSTM_BWD
  }
}

void lstm_backward(int mode, int batch, int hidden, const float *a, const float *cp,
                   const float *tc, const float *dh, const float *dy, float *dc, float *dz) {
  SPLIT_ROWS(lstm_backward_rows(mode, lo, hi, hidden, a, cp, tc, dh, dy, dc, dz));
}

static inline __attribute__((always_inline)) void gru_forward_row(
    const int refine, const int H, const float *restrict xb, const float *restrict gb,
    const float *restrict hpb, float *restrict ab, float *restrict hb) {
#pragma omp simd
  for (int j = 0; j < H; ++j) {
    float r = sigmoid_f(xb[j] + gb[j]);
    float z = sigmoid_f(xb[H + j] + gb[H + j]);
    float n = tanh_f(xb[2 * H + j] + r * gb[2 * H + j]);
    float g = z;
    if (refine) {
      float rho = sigmoid_f(xb[3 * H + j] + gb[3 * H + j]);
      ab[3 * H + j] = rho;
      g = z * z + 2.0f * rho * z * (1.0f - z);
    }
    ab[j] = r, ab[H + j] = z, ab[2 * H + j] = n;
    hb[j] = n + g * (hpb[j] - n);
  }
}

/* One GRU step. xw: [B, G] W_ih x + b_ih; gh: [B, G] W_hh h + b_hh; hp: [B, H] the state the
 * step starts from. Writes a: [B, G] activations (n's block holds n) and h: [B, H]. */
static void gru_forward_rows(int refine, int lo, int hi, int hidden, const float *xw,
                             const float *gh, const float *hp, float *a, float *h) {
  const int H = hidden;
  const size_t G = (size_t)(refine ? 4 : 3) * H;
  for (int b = lo; b < hi; ++b) {
    const float *xb = xw + b * G, *gb = gh + b * G, *hpb = hp + (size_t)b * H;
    float *ab = a + b * G, *hb = h + (size_t)b * H;
    if (refine)
      gru_forward_row(1, H, xb, gb, hpb, ab, hb);
    else
      gru_forward_row(0, H, xb, gb, hpb, ab, hb);
  }
}

void gru_forward(int refine, int batch, int hidden, const float *xw, const float *gh,
                 const float *hp, float *a, float *h) {
  SPLIT_ROWS(gru_forward_rows(refine, lo, hi, hidden, xw, gh, hp, a, h));
}

static inline __attribute__((always_inline)) void gru_backward_row(
    const int refine, const int have_dy, const int H, const float *restrict ab,
    const float *restrict gb, const float *restrict hpb, const float *restrict dhb,
    const float *restrict dyb, float *restrict dxb, float *restrict dhh, float *restrict dpb) {
#pragma omp simd
  for (int j = 0; j < H; ++j) {
    float dht = have_dy ? dhb[j] + dyb[j] : dhb[j];
    float r = ab[j], z = ab[H + j], n = ab[2 * H + j];
    float dz_dzz = z * (1.0f - z);
    float g = z, dgz, drho = 0.0f;
    float dgh = dht * (hpb[j] - n); /* dL/dg */
    if (refine) {
      float rho = ab[3 * H + j];
      g = z * z + 2.0f * rho * dz_dzz;
      dgz = 2.0f * dgh * (z + rho - 2.0f * rho * z) * dz_dzz;
      drho = 2.0f * dgh * dz_dzz * rho * (1.0f - rho);
    } else {
      dgz = dgh * dz_dzz;
    }
    float dn = dht * (1.0f - g) * (1.0f - n * n);
    float dr = dn * gb[2 * H + j] * r * (1.0f - r);
    dxb[j] = dr, dhh[j] = dr;
    dxb[H + j] = dgz, dhh[H + j] = dgz;
    dxb[2 * H + j] = dn, dhh[2 * H + j] = dn * r;
    if (refine) dxb[3 * H + j] = drho, dhh[3 * H + j] = drho;
    dpb[j] = dht * g;
  }
}

/* Backward of one GRU step. dh: [B, H] dL/dh_t through the recurrence (both paths), dy as
 * lstm_backward. Writes dzx: [B, G] dL/d(W_ih x + b_ih), dzh: [B, G] dL/d(W_hh h + b_hh) and
 * dprev: [B, H] dL/dh_{t-1} directly (g_t dL/dh_t), to which the caller adds dzh W_hh. */
static void gru_backward_rows(int refine, int lo, int hi, int hidden, const float *a,
                              const float *gh, const float *hp, const float *dh,
                              const float *dy, float *dzx, float *dzh, float *dprev) {
  const int H = hidden;
  const size_t G = (size_t)(refine ? 4 : 3) * H;
  for (int b = lo; b < hi; ++b) {
    const float *ab = a + b * G, *gb = gh + b * G, *hpb = hp + (size_t)b * H;
    const float *dhb = dh + (size_t)b * H, *dyb = dy ? dy + (size_t)b * H : NULL;
    float *dxb = dzx + b * G, *dhh = dzh + b * G, *dpb = dprev + (size_t)b * H;
    if (refine && dy)
      gru_backward_row(1, 1, H, ab, gb, hpb, dhb, dyb, dxb, dhh, dpb);
    else if (refine)
      gru_backward_row(1, 0, H, ab, gb, hpb, dhb, dyb, dxb, dhh, dpb);
    else if (dy)
      gru_backward_row(0, 1, H, ab, gb, hpb, dhb, dyb, dxb, dhh, dpb);
    else
      gru_backward_row(0, 0, H, ab, gb, hpb, dhb, dyb, dxb, dhh, dpb);
  }
}

void gru_backward(int refine, int batch, int hidden, const float *a, const float *gh,
                  const float *hp, const float *dh, const float *dy, float *dzx, float *dzh,
                  float *dprev) {
  SPLIT_ROWS(gru_backward_rows(refine, lo, hi, hidden, a, gh, hp, dh, dy, dzx, dzh, dprev));
}

/* Softmax of z[0..n) into s (max-shifted), with the library-free exp. s may be z. */
static void softmax_row(const int n, const float *z, float *s) {
  float m = z[0];
#pragma omp simd reduction(max : m)
  for (int k = 0; k < n; ++k) m = z[k] > m ? z[k] : m;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int k = 0; k < n; ++k) {
    float e = exp_f(z[k] - m);
    s[k] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int k = 0; k < n; ++k) s[k] *= inv;
}

/* Inclusive prefix sum y_k = x_0 + ... + x_k, k < n, for two rows at once (x0 -> y0, x1 -> y1;
 * y may be x). A plain running sum is one long chain of dependent additions; this splits each
 * row into SEG segments summed side by side (independent chains), then adds each segment's
 * offset in a vectorised pass. */
#define SEG 8
static void prefix_sum2(const int n, const float *x0, const float *x1, float *y0, float *y1) {
  const int len = (n + SEG - 1) / SEG;
  float a0[SEG] = {0}, a1[SEG] = {0};
  if (n % SEG == 0) { /* every segment full: no bounds test in the inner loop */
    for (int q = 0; q < len; ++q) {
      for (int s = 0; s < SEG; ++s) {
        const int k = s * len + q;
        a0[s] += x0[k], a1[s] += x1[k];
        y0[k] = a0[s], y1[k] = a1[s];
      }
    }
  } else {
    for (int q = 0; q < len; ++q) {
      for (int s = 0; s < SEG; ++s) {
        const int k = s * len + q;
        if (k < n) {
          a0[s] += x0[k], a1[s] += x1[k];
          y0[k] = a0[s], y1[k] = a1[s];
        }
      }
    }
  }
  float o0 = 0.0f, o1 = 0.0f;
  for (int s = 1; s < SEG; ++s) {
    o0 += a0[s - 1], o1 += a1[s - 1];
    const int k1 = (s + 1) * len < n ? (s + 1) * len : n;
#pragma omp simd
    for (int k = s * len; k < k1; ++k) y0[k] += o0, y1[k] += o1;
  }
}

/* The master gates of one row at unit level: F[j] = cumsum(sf)[j / chunk] and
 * I[j] = 1 - cumsum(si)[j / chunk], j < H = n chunk. */
static void master_units(const int n, const int chunk, const float *sf, const float *si,
                         float *F, float *I) {
  prefix_sum2(n, sf, si, F, I); /* at master level in F[0..n), I[0..n) */
#pragma omp simd
  for (int k = 0; k < n; ++k) I[k] = 1.0f - I[k];
  for (int k = n - 1; k > 0 && chunk > 1; --k) { /* broadcast over chunks, from the end */
    for (int q = chunk - 1; q >= 0; --q) F[k * chunk + q] = F[k], I[k * chunk + q] = I[k];
  }
  for (int q = 1; q < chunk; ++q) F[q] = F[0], I[q] = I[0];
}

/* One ON-LSTM step (LSTM_MASTER). As lstm_forward, plus chunk (H = n chunk). The master
 * blocks of a hold the softmaxes of z_f~ and z_i~. */
static void master_forward_rows(int lo, int hi, int hidden, int chunk, const float *xw,
                                const float *hw, float *a, const float *cp, float *c, float *tc,
                                float *h) {
  const int H = hidden, n = hidden / chunk;
  const size_t G = (size_t)4 * H + 2 * n;
  for (int b = lo; b < hi; ++b) {
    float F[H], I[H]; /* the row's master gates per unit */
    float *ab = a + b * G;
    add_rows((int)G, xw + b * G, hw + b * G, ab);
    softmax_row(n, ab + 4 * H, ab + 4 * H);
    softmax_row(n, ab + 4 * H + n, ab + 4 * H + n);
    master_units(n, chunk, ab + 4 * H, ab + 4 * H + n, F, I);
    const float *cpb = cp + (size_t)b * H;
    float *cb = c + (size_t)b * H, *tcb = tc + (size_t)b * H, *hb = h + (size_t)b * H;
#pragma omp simd
    for (int j = 0; j < H; ++j) {
      float i = sigmoid_f(ab[j]), f = sigmoid_f(ab[H + j]);
      float u = tanh_f(ab[2 * H + j]), o = sigmoid_f(ab[3 * H + j]);
      ab[j] = i, ab[H + j] = f, ab[2 * H + j] = u, ab[3 * H + j] = o;
      float w = F[j] * I[j];
      float g = f * w + (F[j] - w), ih = i * w + (I[j] - w);
      float cn = g * cpb[j] + ih * u;
      float t = tanh_f(cn);
      cb[j] = cn, tcb[j] = t, hb[j] = o * t;
    }
  }
}

void master_forward(int batch, int hidden, int chunk, const float *xw, const float *hw,
                    float *a, const float *cp, float *c, float *tc, float *h) {
  SPLIT_ROWS(master_forward_rows(lo, hi, hidden, chunk, xw, hw, a, cp, c, tc, h));
}

/* Backward of the two cumaxes of a row through their softmaxes sf, si: dz = s (ds - <ds, s>),
 * ds_k = sum_{j >= k} dy_j = total - (prefix sum)_k + dy_k. dy and dz are [2 n] (f~ then
 * i~); ps: [2 n] scratch. */
static void cumax_backward_pair(const int n, const float *dy, const float *sf, const float *si,
                                float *ps, float *dz) {
  prefix_sum2(n, dy, dy + n, ps, ps + n);
  const float tf = ps[n - 1], ti = ps[2 * n - 1];
  float df = 0.0f, di = 0.0f;
#pragma omp simd reduction(+ : df, di)
  for (int k = 0; k < n; ++k) {
    float gf = tf - ps[k] + dy[k], gi = ti - ps[n + k] + dy[n + k];
    dz[k] = gf, dz[n + k] = gi;
    df += gf * sf[k], di += gi * si[k];
  }
#pragma omp simd
  for (int k = 0; k < n; ++k) dz[k] = sf[k] * (dz[k] - df), dz[n + k] = si[k] * (dz[n + k] - di);
}

/* Backward of one ON-LSTM step: as lstm_backward, plus chunk. Per row it works in 4 H floats
 * on the stack: F, I, then dL/dF and dL/dI per unit, summed per chunk in place; F and I are
 * reused as the cumax backward's scratch. */
static void master_backward_rows(int lo, int hi, int hidden, int chunk, const float *a,
                                 const float *cp, const float *tc, const float *dh,
                                 const float *dy, float *dc, float *dz) {
  const int H = hidden, n = hidden / chunk;
  const size_t G = (size_t)4 * H + 2 * n;
  for (int b = lo; b < hi; ++b) {
    float work[4 * H];
    float *F = work, *I = work + H, *dF = work + 2 * H, *dI = work + 3 * H;
    const float *ab = a + b * G, *cpb = cp + (size_t)b * H, *tcb = tc + (size_t)b * H;
    const float *dhb = dh + (size_t)b * H, *dyb = dy ? dy + (size_t)b * H : NULL;
    float *dcb = dc + (size_t)b * H, *dzb = dz + b * G;
    master_units(n, chunk, ab + 4 * H, ab + 4 * H + n, F, I);
#pragma omp simd
    for (int j = 0; j < H; ++j) {
      float dht = dyb ? dhb[j] + dyb[j] : dhb[j];
      float i = ab[j], f = ab[H + j], u = ab[2 * H + j], o = ab[3 * H + j], t = tcb[j];
      float dct = dcb[j] + dht * o * (1.0f - t * t);
      float w = F[j] * I[j], cprev = cpb[j];
      float g = f * w + (F[j] - w), ih = i * w + (I[j] - w);
      dzb[j] = dct * u * w * i * (1.0f - i);
      dzb[H + j] = dct * cprev * w * f * (1.0f - f);
      dzb[2 * H + j] = dct * ih * (1.0f - u * u);
      dzb[3 * H + j] = dht * t * o * (1.0f - o);
      float dw = dct * ((f - 1.0f) * cprev + (i - 1.0f) * u); /* dL/dw */
      dF[j] = dct * cprev + dw * I[j];                       /* dL/dF, this unit's share */
      dI[j] = -(dct * u + dw * F[j]);                        /* dL/d cumax(z_i~) */
      dcb[j] = dct * g;
    }
    if (chunk > 1) {
      for (int k = 0; k < n; ++k) { /* sum each chunk's units into its master gate */
        float sf = 0.0f, si = 0.0f;
        for (int q = 0; q < chunk; ++q) sf += dF[k * chunk + q], si += dI[k * chunk + q];
        dF[k] = sf, dI[k] = si;
      }
      memcpy(dF + n, dI, n * sizeof(float)); /* [dF | dI], 2 n contiguous */
    } /* else dF and dI are already adjacent: dI = dF + H = dF + n */
    cumax_backward_pair(n, dF, ab + 4 * H, ab + 4 * H + n, F, dzb + 4 * H);
  }
}

void master_backward(int batch, int hidden, int chunk, const float *a, const float *cp,
                     const float *tc, const float *dh, const float *dy, float *dc, float *dz) {
  SPLIT_ROWS(master_backward_rows(lo, hi, hidden, chunk, a, cp, tc, dh, dy, dc, dz));
}

/* ---- Whole sequences in one call (small problems) ----
 * Below some size the per-step cost of a native call and a oneDNN matmul from Python (tens of
 * microseconds) is more than the step's arithmetic: PPO's minibatches of a few sequences, and
 * acting one step at a time. The functions below run the whole time loop here, the recurrent
 * matmul included (small_matmul, or the BLAS sgemm given as `gemm` for mid-sized steps), and
 * call the step functions above. fused.native_loop decides which. */

#define MR 4  /* rows of x per register block */
#define NB 64 /* columns of out per register block */

/* out[r, n0 + n] = init_r[n0 + n] + sum_k x[r, k] w[k, n0 + n] for rows r < rows (<= MR) and
 * n < nb (<= NB); the accumulators stay in registers when rows and nb are constants. */
static inline __attribute__((always_inline)) void matmul_block(
    const int rows, const int nb, const int K, const int N, const float *restrict x,
    const float *restrict w, const float *restrict init, const int init_stride,
    float *restrict out) {
  float acc[MR][NB];
  for (int r = 0; r < rows; ++r) {
#pragma omp simd
    for (int n = 0; n < nb; ++n) acc[r][n] = init ? init[(size_t)r * init_stride + n] : 0.0f;
  }
  for (int k = 0; k < K; ++k) {
    const float *restrict wk = w + (size_t)k * N;
    for (int r = 0; r < rows; ++r) {
      const float xr = x[(size_t)r * K + k];
#pragma omp simd
      for (int n = 0; n < nb; ++n) acc[r][n] += xr * wk[n];
    }
  }
  for (int r = 0; r < rows; ++r) {
#pragma omp simd
    for (int n = 0; n < nb; ++n) out[(size_t)r * N + n] = acc[r][n];
  }
}

/* out = init + x w: x [B, K], w [K, N], out [B, N], all row-major and contiguous. init: NULL
 * (zeros), a row broadcast to every row (init_stride 0, e.g. a bias) or [B, N] (init_stride N;
 * may be out itself). */
static void small_matmul(const int B, const int K, const int N, const float *x, const float *w,
                         const float *init, const int init_stride, float *out) {
  for (int n0 = 0; n0 < N; n0 += NB) {
    const int nb = N - n0 < NB ? N - n0 : NB;
    const float *wn = w + n0, *in = init ? init + n0 : NULL;
    int b = 0;
    if (nb == NB) {
      for (; b + MR <= B; b += MR)
        matmul_block(MR, NB, K, N, x + (size_t)b * K, wn, in ? in + (size_t)b * init_stride : 0,
                     init_stride, out + (size_t)b * N + n0);
      for (; b < B; ++b)
        matmul_block(1, NB, K, N, x + (size_t)b * K, wn, in ? in + (size_t)b * init_stride : 0,
                     init_stride, out + (size_t)b * N + n0);
    } else {
      for (; b < B; ++b)
        matmul_block(1, nb, K, N, x + (size_t)b * K, wn, in ? in + (size_t)b * init_stride : 0,
                     init_stride, out + (size_t)b * N + n0);
    }
  }
}

/* A BLAS sgemm with the Fortran interface (MKL's or OpenBLAS's sgemm_), column-major. */
typedef void (*sgemm_fn)(const char *transa, const char *transb, const int *m, const int *n,
                         const int *k, const float *alpha, const float *a, const int *lda,
                         const float *b, const int *ldb, const float *beta, float *c,
                         const int *ldc);

/* small_matmul's contract, through gemm (an sgemm_fn) where it is not NULL. Row-major
 * out [B, N] = x [B, K] w [K, N] is column-major out^T = w^T x^T: sgemm("N", "N", N, B, K). */
static void matmul(const void *gemm, const int B, const int K, const int N, const float *x,
                   const float *w, const float *init, const int init_stride, float *out) {
  if (!gemm) {
    small_matmul(B, K, N, x, w, init, init_stride, out);
    return;
  }
  float beta = init ? 1.0f : 0.0f;
  if (init && init != out) {
    for (int b = 0; b < B; ++b)
      memcpy(out + (size_t)b * N, init + (size_t)b * init_stride, N * sizeof(float));
  }
  const float one = 1.0f;
  ((sgemm_fn)gemm)("N", "N", &N, &B, &K, &one, w, &N, x, &K, &beta, out, &N);
}

/* Whether any of the B flags is set. */
static int any_set(const int B, const unsigned char *flags) {
  if (!flags) return 0;
  for (int b = 0; b < B; ++b)
    if (flags[b]) return 1;
  return 0;
}

/* Zero the rows of x [B, n] whose flag is set. */
static void zero_rows(const int B, const int n, const unsigned char *flags, float *x) {
  for (int b = 0; b < B; ++b)
    if (flags[b]) memset(x + (size_t)b * n, 0, n * sizeof(float));
}

/* h with the flagged rows zeroed, into tmp; returns the rows to use (h itself if none). */
static const float *reset_rows(const int B, const int H, const unsigned char *flags,
                               const float *h, float *tmp) {
  if (!any_set(B, flags)) return h;
  memcpy(tmp, h, (size_t)B * H * sizeof(float));
  zero_rows(B, H, flags, tmp);
  return tmp;
}

static size_t lstm_width(const int mode, const int H, const int chunk) {
  if (mode == LSTM_MASTER) return (size_t)4 * H + 2 * (H / chunk);
  return (size_t)(mode == LSTM_TIED ? 3 : 4) * H;
}

/* The rows of a recurrence never meet: from SEQUENCE_SPLIT_MIN multiply-adds (T B H G) and
 * 2 MR rows on, the *_sequence_* functions split the rows over torch's OpenMP threads (when
 * compiled with -fopenmp), each thread running every step for its own rows, with no barrier.
 * Not with a BLAS gemm (its kernels may depend on the number of rows). The split falls on
 * multiples of MR rows, the matmul's register blocks, and each row's arithmetic is the same
 * whatever the split: results do not depend on the thread count. */
#define SEQUENCE_SPLIT_MIN (1 << 19)

typedef struct {
  int lo, n; /* rows lo .. lo + n - 1 */
} row_range;

/* This thread's rows of B (inside a parallel region: its share, in whole MR blocks). */
static row_range my_rows(const int B) {
  row_range r = {0, B};
#ifdef _OPENMP
  const int parts = omp_get_num_threads(), me = omp_get_thread_num();
  const int blocks = (B + MR - 1) / MR;
  int lo = blocks * me / parts * MR, hi = blocks * (me + 1) / parts * MR;
  hi = hi < B ? hi : B;
  r.lo = lo < B ? lo : B;
  r.n = hi > r.lo ? hi - r.lo : 0;
#endif
  return r;
}

static int split_rows(const void *gemm, const int steps, const int B, const int H,
                      const size_t G) {
  return !gemm && B >= 2 * MR && (double)steps * B * H * (double)G >= SEQUENCE_SPLIT_MIN;
}

#ifdef _OPENMP
#define PARALLEL_SEQUENCE(split) _Pragma("omp parallel if (split)")
#else
#define PARALLEL_SEQUENCE(split)
#endif

/* lstm_sequence_forward for rows lo .. lo + n - 1 of B (every pointer the whole batch's). */
static void lstm_sequence_forward_rows(int mode, int steps, int B, int lo, int n, int H,
                                       int chunk, const float *xw, const float *w_hh_t,
                                       const unsigned char *first, float *a, float *c,
                                       float *tc, float *ys, float *work, const void *gemm) {
  const size_t G = lstm_width(mode, H, chunk), BH = (size_t)B * H;
  float *hw = work + (size_t)lo * G, *hk = work + B * G + (size_t)lo * H;
  for (int t = 0; t < steps; ++t) {
    const unsigned char *ft = first ? first + (size_t)t * B + lo : NULL;
    float *cp = c + t * BH + (size_t)lo * H;
    const float *h = reset_rows(n, H, ft, ys + t * BH + (size_t)lo * H, hk);
    if (h == hk) zero_rows(n, H, ft, cp);
    matmul(gemm, n, H, (int)G, h, w_hh_t, NULL, 0, hw);
    const size_t at = t * B * G + (size_t)lo * G, ht = t * BH + (size_t)lo * H;
    if (mode == LSTM_MASTER)
      master_forward_rows(0, n, H, chunk, xw + at, hw, a + at, cp, cp + BH, tc + ht,
                          ys + ht + BH);
    else
      lstm_forward_rows(mode, 0, n, H, xw + at, hw, a + at, cp, cp + BH, tc + ht,
                        ys + ht + BH);
  }
}

/* T steps of an LSTM-family core (any mode, LSTM_MASTER with its chunk). xw: [T, B, G] input
 * projections (with both biases); w_hh_t: [H, G] = W_hh^T; first: [T, B] reset flags or NULL.
 * c: [T + 1, B, H] with c[0] the initial cell; ys: [T + 1, B, H] with ys[0] the initial output.
 * Writes a: [T, B, G], c[t] = c_{t-1} after its reset, c[T], tc: [T, B, H] and ys[1..T], as T
 * calls of lstm_forward / master_forward would. work: B G + B H floats. */
void lstm_sequence_forward(int mode, int steps, int batch, int hidden, int chunk,
                           const float *xw, const float *w_hh_t, const unsigned char *first,
                           float *a, float *c, float *tc, float *ys, float *work,
                           const void *gemm) {
  const int split = split_rows(gemm, steps, batch, hidden, lstm_width(mode, hidden, chunk));
  PARALLEL_SEQUENCE(split) {
    const row_range r = split ? my_rows(batch) : (row_range){0, batch};
    if (r.n > 0)
      lstm_sequence_forward_rows(mode, steps, batch, r.lo, r.n, hidden, chunk, xw, w_hh_t,
                                 first, a, c, tc, ys, work, gemm);
  }
}

static void lstm_sequence_backward_rows(int mode, int steps, int B, int lo, int n, int H,
                                        int chunk, const float *a, const float *c,
                                        const float *tc, const unsigned char *first,
                                        const float *dy, const float *w_hh, float *dh,
                                        float *dc, float *dz, const void *gemm) {
  const size_t G = lstm_width(mode, H, chunk), BH = (size_t)B * H;
  dh += (size_t)lo * H, dc += (size_t)lo * H;
  for (int t = steps - 1; t >= 0; --t) {
    const size_t at = t * B * G + (size_t)lo * G, ht = t * BH + (size_t)lo * H;
    const float *dy_t = dy ? dy + ht : NULL;
    float *dz_t = dz + at;
    if (mode == LSTM_MASTER)
      master_backward_rows(0, n, H, chunk, a + at, c + ht, tc + ht, dh, dy_t, dc, dz_t);
    else
      lstm_backward_rows(mode, 0, n, H, a + at, c + ht, tc + ht, dh, dy_t, dc, dz_t);
    matmul(gemm, n, (int)G, H, dz_t, w_hh, NULL, 0, dh);
    const unsigned char *ft = first ? first + (size_t)t * B + lo : NULL;
    if (any_set(n, ft)) zero_rows(n, H, ft, dh), zero_rows(n, H, ft, dc);
  }
}

/* Backward of steps n - 1 .. 0 of the above (a, c, tc, first, dy: those steps' slices; dy may be
 * NULL). w_hh: [G, H]. dh, dc: [B, H], on entry dL/dh and dL/dc after step n - 1 through the
 * recurrence, on exit the same before step 0 (resets applied). Writes dz: [n, B, G]. */
void lstm_sequence_backward(int mode, int steps, int batch, int hidden, int chunk,
                            const float *a, const float *c, const float *tc,
                            const unsigned char *first, const float *dy, const float *w_hh,
                            float *dh, float *dc, float *dz, const void *gemm) {
  const int split = split_rows(gemm, steps, batch, hidden, lstm_width(mode, hidden, chunk));
  PARALLEL_SEQUENCE(split) {
    const row_range r = split ? my_rows(batch) : (row_range){0, batch};
    if (r.n > 0)
      lstm_sequence_backward_rows(mode, steps, batch, r.lo, r.n, hidden, chunk, a, c, tc,
                                  first, dy, w_hh, dh, dc, dz, gemm);
  }
}

static void gru_sequence_forward_rows(int refine, int steps, int B, int lo, int n, int H,
                                      const float *xw, const float *w_hh_t, const float *b_hh,
                                      const unsigned char *first, float *a, float *gh,
                                      float *ys, float *work, const void *gemm) {
  const size_t G = (size_t)(refine ? 4 : 3) * H, BH = (size_t)B * H;
  work += (size_t)lo * H;
  for (int t = 0; t < steps; ++t) {
    const size_t at = t * B * G + (size_t)lo * G, ht = t * BH + (size_t)lo * H;
    const unsigned char *ft = first ? first + (size_t)t * B + lo : NULL;
    const float *h = reset_rows(n, H, ft, ys + ht, work);
    matmul(gemm, n, H, (int)G, h, w_hh_t, b_hh, 0, gh + at);
    gru_forward_rows(refine, 0, n, H, xw + at, gh + at, h, a + at, ys + ht + BH);
  }
}

/* T steps of a GRU (refine: UR-GRU). xw: [T, B, G] W_ih x + b_ih; w_hh_t: [H, G]; b_hh: [G];
 * first as above; ys: [T + 1, B, H] with ys[0] the initial state. Writes a: [T, B, G],
 * gh: [T, B, G] (W_hh h + b_hh per step) and ys[1..T]. work: B H floats. */
void gru_sequence_forward(int refine, int steps, int batch, int hidden, const float *xw,
                          const float *w_hh_t, const float *b_hh, const unsigned char *first,
                          float *a, float *gh, float *ys, float *work,
                          const void *gemm) {
  const int split = split_rows(gemm, steps, batch, hidden, (size_t)(refine ? 4 : 3) * hidden);
  PARALLEL_SEQUENCE(split) {
    const row_range r = split ? my_rows(batch) : (row_range){0, batch};
    if (r.n > 0)
      gru_sequence_forward_rows(refine, steps, batch, r.lo, r.n, hidden, xw, w_hh_t, b_hh,
                                first, a, gh, ys, work, gemm);
  }
}

static void gru_sequence_backward_rows(int refine, int steps, int B, int lo, int n, int H,
                                       const float *a, const float *gh, const float *hp,
                                       const unsigned char *first, const float *dy,
                                       const float *w_hh, float *dh, float *dzx, float *dzh,
                                       float *work, const void *gemm) {
  const size_t G = (size_t)(refine ? 4 : 3) * H, BH = (size_t)B * H;
  dh += (size_t)lo * H, work += (size_t)lo * H;
  for (int t = steps - 1; t >= 0; --t) {
    const size_t at = t * B * G + (size_t)lo * G, ht = t * BH + (size_t)lo * H;
    gru_backward_rows(refine, 0, n, H, a + at, gh + at, hp + ht, dh, dy ? dy + ht : NULL,
                      dzx + at, dzh + at, work);
    matmul(gemm, n, (int)G, H, dzh + at, w_hh, work, H, dh);
    const unsigned char *ft = first ? first + (size_t)t * B + lo : NULL;
    if (any_set(n, ft)) zero_rows(n, H, ft, dh);
  }
}

/* Backward of steps n - 1 .. 0 of the above. hp: [n, B, H] the states the steps started from
 * (after resets); w_hh: [G, H]; dh: [B, H] in/out as lstm_sequence_backward's. Writes dzx, dzh:
 * [n, B, G]. work: B H floats. */
void gru_sequence_backward(int refine, int steps, int batch, int hidden, const float *a,
                           const float *gh, const float *hp, const unsigned char *first,
                           const float *dy, const float *w_hh, float *dh, float *dzx,
                           float *dzh, float *work, const void *gemm) {
  const int split = split_rows(gemm, steps, batch, hidden, (size_t)(refine ? 4 : 3) * hidden);
  PARALLEL_SEQUENCE(split) {
    const row_range r = split ? my_rows(batch) : (row_range){0, batch};
    if (r.n > 0)
      gru_sequence_backward_rows(refine, steps, batch, r.lo, r.n, hidden, a, gh, hp, first, dy,
                                 w_hh, dh, dzx, dzh, work, gemm);
  }
}

/* How a view arrives: none, a minigrid view's codes ([k] per row, entry j's one-hot starting
 * at base[j]) or a grid ([vocab] per row, the per-cell channels flattened, usually 0/1). */
enum { VIEW_NONE = 0, VIEW_CODES = 1, VIEW_GRID = 2 };

/* 16 floats as one vector (GCC and Clang vector extensions, any alignment; one AVX-512
 * register, two AVX ones): the loops below gather rows through indices, which the compilers do
 * not vectorise on their own. A row of the one-hot kernels is cut into tiles of 64, 32 or 16
 * columns (4, 2 or 1 vectors, held in registers) and a scalar tail. */
typedef float vec16 __attribute__((vector_size(64), aligned(4)));

/* o[0, 16 nv) = (o's values, or 0 where first) + sum over entries j0 <= j < j1 of the table
 * rows base[j] + cb[j], in j order (table and o point at the tile's first column). */
static inline __attribute__((always_inline)) void gather_tile(
    const int nv, const int first, const int j0, const int j1, const int dim,
    const uint8_t *restrict cb, const int64_t *restrict base, const float *restrict table,
    float *restrict o) {
  vec16 a[4];
  for (int q = 0; q < nv; ++q) a[q] = first ? (vec16){0} : *(const vec16 *)(o + 16 * q);
  for (int j = j0; j < j1; ++j) {
    const float *t = table + (size_t)(base[j] + cb[j]) * dim;
    for (int q = 0; q < nv; ++q) a[q] += *(const vec16 *)(t + 16 * q);
  }
  for (int q = 0; q < nv; ++q) *(vec16 *)(o + 16 * q) = a[q];
}

/* dst[d, dim) += src[d, dim): fewer than 16 columns, 8 or 4 at a time where they fit. */
static inline void add_tail(int d, const int dim, const float *restrict src, float *restrict dst) {
  typedef float vec8 __attribute__((vector_size(32), aligned(4)));
  typedef float vec4 __attribute__((vector_size(16), aligned(4)));
  if (d + 8 <= dim) *(vec8 *)(dst + d) += *(const vec8 *)(src + d), d += 8;
  if (d + 4 <= dim) *(vec4 *)(dst + d) += *(const vec4 *)(src + d), d += 4;
  for (; d < dim; ++d) dst[d] += src[d];
}

/* The table-gradient rows base[j] + cr[j] (j0 <= j < j1) in [lo, hi) += g[0, 16 nv) (grad
 * and g point at the tile's first column). */
static inline __attribute__((always_inline)) void scatter_tile(
    const int nv, const int j0, const int j1, const int dim, const int64_t lo, const int64_t hi,
    const uint8_t *restrict cr, const int64_t *restrict base, const float *restrict g,
    float *restrict grad) {
  vec16 a[4];
  for (int q = 0; q < nv; ++q) a[q] = *(const vec16 *)(g + 16 * q);
  for (int j = j0; j < j1; ++j) {
    const int64_t v = base[j] + cr[j];
    if (v < lo || v >= hi) continue;
    float *t = grad + (size_t)v * dim;
    for (int q = 0; q < nv; ++q) *(vec16 *)(t + 16 * q) += a[q];
  }
}

/* Whether every base[j] + codes[r, j] (r < rows, j < k) lies in [0, vocab). */
static int onehot_in_range(const int64_t rows, const int k, const int64_t vocab,
                           const uint8_t *codes, const int64_t *base) {
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < k; ++j) {
      const int64_t v = base[j] + codes[(size_t)r * k + j];
      bad |= v < 0 || v >= vocab;
    }
  return !bad;
}

/* Entries of codes per block of the one-hot kernels: they walk the entries block by block, the
 * outermost loop, every row inside, so that the table rows a block reaches (about vocab / k per
 * entry, dim floats each) stay in a 32 KiB share of the L1 cache while all rows read them,
 * instead of every row reaching the whole table in L2. Each sum keeps its order. */
static int onehot_block(const int k, const int64_t vocab, const int dim) {
  const int64_t per_entry = (vocab + k - 1) / k * dim * (int64_t)sizeof(float);
  const int64_t block = (32 << 10) / (per_entry > 0 ? per_entry : 1);
  return block < 1 ? 1 : block > k ? k : (int)block;
}

/* onehot_forward's rows [lo, hi), with codes, out pointing at row 0. */
static void onehot_rows(const int64_t lo, const int64_t hi, const int k, const int64_t vocab,
                        const int dim, const uint8_t *codes, const int64_t *base,
                        const float *table, float *out) {
  const int jb = onehot_block(k, vocab, dim);
  for (int j0 = 0; j0 < k; j0 += jb) {
    const int j1 = j0 + jb < k ? j0 + jb : k, first = j0 == 0;
    for (int64_t b = lo; b < hi; ++b) {
      const uint8_t *cb = codes + (size_t)b * k;
      float *o = out + (size_t)b * dim;
      int d = 0;
      for (; d + 64 <= dim; d += 64)
        gather_tile(4, first, j0, j1, dim, cb, base, table + d, o + d);
      if (d + 32 <= dim) gather_tile(2, first, j0, j1, dim, cb, base, table + d, o + d), d += 32;
      if (d + 16 <= dim) gather_tile(1, first, j0, j1, dim, cb, base, table + d, o + d), d += 16;
      if (d < dim) { /* the last dim % 16 columns */
        if (first) memset(o + d, 0, (size_t)(dim - d) * sizeof(float));
        for (int j = j0; j < j1; ++j)
          add_tail(d, dim, table + (size_t)(base[j] + cb[j]) * dim, o);
      }
    }
  }
}

/* One-hot features times a weight, without the one-hot: out[r, :] = sum_j table[base[j] +
 * codes[r, j], :] (summed in j order) for r < rows, j < k, with table [vocab, dim] (the weight
 * transposed: row v is the column that feature v's one multiplies). codes: [rows, k] uint8
 * (a minigrid view's object, colour and state codes); base: [k] int64, where entry j's one-hot
 * starts. Returns 0, or -1 (writing nothing) where an index lies outside [0, vocab): the
 * caller raises. Rows are split over torch's threads. */
int onehot_forward(int64_t rows, int k, int64_t vocab, int dim, const uint8_t *codes,
                   const int64_t *base, const float *table, float *out) {
  if (!onehot_in_range(rows, k, vocab, codes, base)) return -1;
#ifdef _OPENMP
#pragma omp parallel if (rows * k * dim >= PARALLEL_MIN)
#endif
  {
    int64_t lo, hi;
    my_share(rows, &lo, &hi);
    onehot_rows(lo, hi, k, vocab, dim, codes, base, table, out);
  }
  return 0;
}

/* The gradient of onehot_forward's table: grad[v, :] += sum of grad_out[r, :] over the (r, j)
 * with base[j] + codes[r, j] = v, rows in order (so the sum's order, and the result, do not
 * depend on the thread count: each thread owns a range of table rows and scans every index).
 * grad: [vocab, dim], accumulated into. Returns 0, or -1 (writing nothing) for an index
 * outside [0, vocab). */
int onehot_backward(int64_t rows, int k, int64_t vocab, int dim, const uint8_t *codes,
                    const int64_t *base, const float *grad_out, float *grad) {
  if (!onehot_in_range(rows, k, vocab, codes, base)) return -1;
  const int jb = onehot_block(k, vocab, dim);
#ifdef _OPENMP
#pragma omp parallel if (rows * k * dim >= 4 * PARALLEL_MIN)
#endif
  {
    int64_t lo, hi;
    my_share(vocab, &lo, &hi);
    for (int j0 = 0; j0 < k; j0 += jb) {
      const int j1 = j0 + jb < k ? j0 + jb : k;
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t *cr = codes + (size_t)r * k;
        const float *g = grad_out + (size_t)r * dim;
        int d = 0;
        for (; d + 64 <= dim; d += 64)
          scatter_tile(4, j0, j1, dim, lo, hi, cr, base, g + d, grad + d);
        if (d + 32 <= dim) scatter_tile(2, j0, j1, dim, lo, hi, cr, base, g + d, grad + d), d += 32;
        if (d + 16 <= dim) scatter_tile(1, j0, j1, dim, lo, hi, cr, base, g + d, grad + d), d += 16;
        for (int j = j0; j < j1 && d < dim; ++j) { /* the last dim % 16 columns */
          const int64_t v = base[j] + cr[j];
          if (v >= lo && v < hi) add_tail(d, dim, g, grad + (size_t)v * dim);
        }
      }
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------
 * A view's features, optionally gated per channel, times a weight, from the view's nonzero
 * entries alone (the training forward and backward of the view-gate heads and of a grid
 * encoder): out[r, :] = sum over the hot features v of row r, in v order, of
 * s(r, v) table[v, :], with s(r, v) = value(r, v) gate[r, v % C] (value(r, v) alone without a
 * gate). A grid row's hot features are its nonzero entries (value: the entry); a codes row's
 * are base[j] + codes[r, j] (value 1). With C channels per cell, feature v is channel v % C. */

typedef struct {
  int64_t rows, view, k, vocab, channels, dim;
  const uint8_t *obs;   /* [rows, k] codes or [rows, vocab] grid (k == vocab) */
  const int64_t *base;  /* VIEW_CODES: [k] */
  const float *gate;    /* [rows, channels] or NULL */
  const float *table;   /* [vocab, dim]: the weight transposed */
  uint64_t cmod;        /* view_channel's constant for channels */
} view_map;

static view_map view_map_of(int64_t rows, int64_t view, int64_t k, int64_t vocab,
                            int64_t channels, int64_t dim, const uint8_t *obs,
                            const int64_t *base, const float *gate, const float *table) {
  /* Lemire's remainder by a constant: v % C from two multiplies, exact for every 32-bit v
   * (C = 1 wraps to 0, which gives 0) */
  const uint64_t cmod = channels > 0 ? UINT64_MAX / (uint64_t)channels + 1 : 0;
  return (view_map){rows, view, k, vocab, channels, dim, obs, base, gate, table, cmod};
}

/* Feature v's channel, v % C. */
static inline int view_channel(const view_map *m, const int32_t v) {
  const uint64_t low = m->cmod * (uint32_t)v;
  return (int)(((unsigned __int128)low * (uint64_t)m->channels) >> 64);
}

/* Hot features are listed HOT_CHUNK at a time (on the stack), so that the sums walk a list
 * instead of branching on every feature of the view. */
#define HOT_CHUNK 256

/* The next hot features of row r from feature (grid) or entry (codes) *pos on, at most
 * HOT_CHUNK: their features into idx and their values into x (before any gate); advances *pos.
 * Returns how many. A grid is read 16 entries at a time where AVX-512 is there (the nonzero
 * ones compressed to the front of a vector), else 8 at a time from a bit mask: no branch on
 * each entry either way. */
static int view_hot(const view_map *m, const int64_t r, int64_t *pos, int32_t *restrict idx,
                    float *restrict x) {
  int n = 0;
  int64_t p = *pos;
  if (m->view == VIEW_GRID) {
    const uint8_t *ob = m->obs + r * m->vocab;
#ifdef __AVX512F__
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; p + 16 <= m->vocab && n + 16 <= HOT_CHUNK; p += 16) {
      const __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ob + p)));
      const __mmask16 nz = _mm512_test_epi32_mask(w, w);
      if (!nz) continue;
      /* all 16 lanes are stored, the hot ones first: n + 16 <= HOT_CHUNK keeps them inside */
      const __m512i at = _mm512_add_epi32(lane, _mm512_set1_epi32((int)p));
      _mm512_storeu_si512(idx + n, _mm512_maskz_compress_epi32(nz, at));
      _mm512_storeu_ps(x + n, _mm512_cvtepi32_ps(_mm512_maskz_compress_epi32(nz, w)));
      n += __builtin_popcount(nz);
    }
#endif
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
    for (; p + 8 <= m->vocab && n + 8 <= HOT_CHUNK; p += 8) {
      uint64_t w;
      memcpy(&w, ob + p, sizeof w);
      uint64_t nz = (((w & low7) + low7) | w) & ~low7; /* bit 7 of each nonzero byte */
      for (; nz; nz &= nz - 1) {
        const int b = __builtin_ctzll(nz) >> 3;
        idx[n] = (int32_t)(p + b), x[n++] = (float)ob[p + b];
      }
    }
    if (p + 8 > m->vocab) /* the last vocab % 8 entries (not a stop at HOT_CHUNK) */
      for (; p < m->vocab && n < HOT_CHUNK; ++p)
        if (ob[p]) idx[n] = (int32_t)p, x[n++] = (float)ob[p];
  } else {
    const uint8_t *ob = m->obs + r * m->k;
    for (; p < m->k && n < HOT_CHUNK; ++p, ++n) idx[n] = (int32_t)(m->base[p] + ob[p]), x[n] = 1.0f;
  }
  *pos = p;
  return n;
}

/* The next hot features of row r as view_hot lists them, with s (their values times their
 * channels' gates) instead of values. */
static int view_hot_scaled(const view_map *m, const int64_t r, int64_t *pos,
                           int32_t *restrict idx, float *restrict s) {
  const int n = view_hot(m, r, pos, idx, s);
  if (m->gate) {
    const float *gr = m->gate + r * m->channels;
    for (int i = 0; i < n; ++i) s[i] *= gr[view_channel(m, idx[i])];
  }
  return n;
}

/* o[0, 16 nv) (+)= sum over i < n of s[i] table[idx[i], d0 + 0 .. 16 nv) (= where first). */
static inline __attribute__((always_inline)) void view_tile(
    const int nv, const int first, const int n, const int32_t *restrict idx,
    const float *restrict s, const float *restrict table, const int64_t dim,
    float *restrict o) {
  vec16 a[8];
  for (int q = 0; q < nv; ++q) a[q] = first ? (vec16){0} : *(const vec16 *)(o + 16 * q);
  for (int i = 0; i < n; ++i) {
    const float *t = table + (int64_t)idx[i] * dim;
    for (int q = 0; q < nv; ++q) a[q] += s[i] * *(const vec16 *)(t + 16 * q);
  }
  for (int q = 0; q < nv; ++q) *(vec16 *)(o + 16 * q) = a[q];
}

/* The activations view_forward_act applies after the sum. */
enum { VIEW_LINEAR = 0, VIEW_TANH = 1, VIEW_RELU = 2 };

/* Rows [lo, hi) of view_forward into out [rows, dim]: out[r, :] (+ where add) = sum over the
 * row's hot features, in order, of s table[v, :], then the activation act (VIEW_*). */
static void view_rows(const view_map *m, const int64_t lo, const int64_t hi, const int add,
                      const int act, float *out) {
  const int64_t dim = m->dim, end = m->view == VIEW_GRID ? m->vocab : m->k;
  int32_t idx[HOT_CHUNK];
  float s[HOT_CHUNK];
  for (int64_t r = lo; r < hi; ++r) {
    float *o = out + r * dim;
    int64_t pos = 0;
    int first = !add;
    do {
      const int n = view_hot_scaled(m, r, &pos, idx, s);
      int64_t d = 0;
      for (; d + 128 <= dim; d += 128) view_tile(8, first, n, idx, s, m->table + d, dim, o + d);
      if (d + 64 <= dim) view_tile(4, first, n, idx, s, m->table + d, dim, o + d), d += 64;
      if (d + 32 <= dim) view_tile(2, first, n, idx, s, m->table + d, dim, o + d), d += 32;
      if (d + 16 <= dim) view_tile(1, first, n, idx, s, m->table + d, dim, o + d), d += 16;
      for (; d < dim; ++d) {
        float acc = first ? 0.0f : o[d];
        for (int i = 0; i < n; ++i) acc += s[i] * m->table[(int64_t)idx[i] * dim + d];
        o[d] = acc;
      }
      first = 0;
    } while (pos < end);
    if (act == VIEW_TANH) /* the MLP heads' tanh, while the row is in cache */
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) o[d] = tanh_f(o[d]);
    else if (act == VIEW_RELU) /* the encoder's ReLU */
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) o[d] = o[d] > 0.0f ? o[d] : 0.0f;
  }
}

/* 0 if m's sizes and pointers are ones the view kernels can run and every index lies inside
 * the table; -1 (a size or pointer), -2 (an index) otherwise. */
static int view_check(const view_map *m) {
  if (m->rows < 0 || m->k < 1 || m->vocab < 1 || m->channels < 1 || m->dim < 1) return -1;
  if (m->vocab % m->channels || m->vocab > INT32_MAX || !m->obs || !m->table) return -1;
  if (m->view == VIEW_GRID) return m->k == m->vocab ? 0 : -1;
  if (m->view != VIEW_CODES || !m->base) return -1;
  return onehot_in_range(m->rows, (int)m->k, m->vocab, m->obs, m->base) ? 0 : -2;
}

/* out [rows, dim] = the gated view times the table (see view_map). Returns 0, or
 * view_check's code (writing nothing): the caller raises. Rows are split over torch's
 * threads. */
int view_forward(int64_t rows, int64_t view, int64_t k, int64_t vocab, int64_t channels,
                 int64_t dim, const uint8_t *obs, const int64_t *base, const float *gate,
                 const float *table, float *out) {
  const view_map m = view_map_of(rows, view, k, vocab, channels, dim, obs, base, gate, table);
  const int bad = view_check(&m);
  if (bad || !out) return bad ? bad : -1;
#ifdef _OPENMP
#pragma omp parallel if (rows * k * dim >= PARALLEL_MIN)
#endif
  {
    int64_t lo, hi;
    my_share(rows, &lo, &hi);
    view_rows(&m, lo, hi, 0, 0, out);
  }
  return 0;
}

/* out [rows, dim] = act(out + the gated view times the table), act VIEW_TANH or VIEW_RELU:
 * a layer whose other inputs' share out holds on entry (the view-gate MLP heads' first layer,
 * the encoder's). Returns as view_forward. */
int view_forward_act(int64_t rows, int64_t view, int64_t k, int64_t vocab, int64_t channels,
                     int64_t dim, const uint8_t *obs, const int64_t *base, const float *gate,
                     const float *table, int64_t act, float *out) {
  const view_map m = view_map_of(rows, view, k, vocab, channels, dim, obs, base, gate, table);
  const int bad = view_check(&m);
  if (bad || !out || (act != VIEW_TANH && act != VIEW_RELU)) return bad ? bad : -1;
#ifdef _OPENMP
#pragma omp parallel if (rows * k * dim >= PARALLEL_MIN)
#endif
  {
    int64_t lo, hi;
    my_share(rows, &lo, &hi);
    view_rows(&m, lo, hi, 1, (int)act, out);
  }
  return 0;
}

/* The sum of a vector's 16 lanes, as a tree of halves (a chain of 15 scalar adds is the
 * slowest part of a short dot product). */
static inline float sum16(const vec16 a) {
  typedef float vec8 __attribute__((vector_size(32)));
  typedef float vec4 __attribute__((vector_size(16)));
  const vec8 h8 = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
  const vec4 h4 = __builtin_shufflevector(h8, h8, 0, 1, 2, 3) +
                  __builtin_shufflevector(h8, h8, 4, 5, 6, 7);
  return (h4[0] + h4[2]) + (h4[1] + h4[3]);
}

/* The lanes of g[0, 16 (dim / 16)) * t[..] summed over the 16-float blocks, *d = where they
 * end: four independent chains of fused multiply-adds (one chain waits on each FMA's latency,
 * about four times the time its throughput needs). */
static inline vec16 dot_lanes(const float *restrict g, const float *restrict t,
                              const int64_t dim, int64_t *d) {
  vec16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
  int64_t j = 0;
  for (; j + 64 <= dim; j += 64) {
    a0 += *(const vec16 *)(g + j) * *(const vec16 *)(t + j);
    a1 += *(const vec16 *)(g + j + 16) * *(const vec16 *)(t + j + 16);
    a2 += *(const vec16 *)(g + j + 32) * *(const vec16 *)(t + j + 32);
    a3 += *(const vec16 *)(g + j + 48) * *(const vec16 *)(t + j + 48);
  }
  for (; j + 16 <= dim; j += 16) a0 += *(const vec16 *)(g + j) * *(const vec16 *)(t + j);
  *d = j;
  return (a0 + a1) + (a2 + a3);
}

/* dot(g[0, dim), table[v, :]). */
static inline float view_dot(const view_map *m, const int64_t v, const float *restrict g) {
  const float *t = m->table + v * m->dim;
  int64_t d;
  float sum = sum16(dot_lanes(g, t, m->dim, &d));
  for (; d < m->dim; ++d) sum += g[d] * t[d];
  return sum;
}

/* One hot feature of a row, as view_backward's first pass lists it: the row and s (the value
 * times the channel's gate). */
typedef struct {
  int32_t row;
  float s;
} view_entry;

/* A thread's hot features of its rows, grouped by feature: feature v's are entries
 * [start[v], start[v + 1]), rows in increasing order. */
typedef struct {
  view_entry *entries; /* sorted */
  int64_t *start;      /* [vocab + 1] */
} view_hot_list;

/* First pass of view_backward over rows [lo, hi): where grad_gate is not NULL, the gate's
 * gradient of each row (grad_gate[r, c] = sum over its hot features v of channel c of
 * value(r, v) dot(g_r, table[v, :])); and every hot feature into *out, grouped by feature
 * (a counting sort, stable: rows stay in increasing order). Returns 0, or -3 when memory
 * runs out. */
static int view_backward_rows(const view_map *m, const int64_t lo, const int64_t hi,
                              float *grad_out, const int act, const float *t, const float *d_t,
                              float *grad_gate, view_hot_list *out) {
  const int64_t dim = m->dim, end = m->view == VIEW_GRID ? m->vocab : m->k;
  int32_t idx[HOT_CHUNK];
  int64_t n_all = 0, cap = (hi - lo) * (end < 32 ? end : 32) + 1;
  float x[HOT_CHUNK];
  int32_t *feat = malloc((size_t)cap * sizeof *feat);
  view_entry *list = malloc((size_t)cap * sizeof *list);
  out->entries = NULL, out->start = calloc((size_t)m->vocab + 1, sizeof *out->start);
  int err = !feat || !list || !out->start;
  for (int64_t r = lo; r < hi && !err; ++r) {
    float *g = grad_out + r * dim;
    if (act == VIEW_TANH) { /* through the activation first: grad_out = d_t act'(its output) */
      const float *tr = t + r * dim, *dr = d_t + r * dim;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) g[d] = dr[d] * (1.0f - tr[d] * tr[d]);
    } else if (act == VIEW_RELU) {
      const float *tr = t + r * dim, *dr = d_t + r * dim;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) g[d] = tr[d] > 0.0f ? dr[d] : 0.0f;
    }
    const float *gr = m->gate ? m->gate + r * m->channels : NULL;
    float *gg = grad_gate ? grad_gate + r * m->channels : NULL;
    if (gg) memset(gg, 0, (size_t)m->channels * sizeof(float));
    int64_t pos = 0;
    do {
      const int n = view_hot(m, r, &pos, idx, x);
      if (n_all + n > cap) { /* grow: a row has at most HOT_CHUNK per chunk */
        cap = 2 * cap + n;
        int32_t *f2 = realloc(feat, (size_t)cap * sizeof *feat);
        if (f2) feat = f2;
        view_entry *l2 = f2 ? realloc(list, (size_t)cap * sizeof *list) : NULL;
        if (l2) list = l2;
        if (!f2 || !l2) {
          err = 1;
          break;
        }
      }
      for (int i = 0; i < n; ++i) {
        feat[n_all + i] = (int32_t)idx[i];
        list[n_all + i] = (view_entry){(int32_t)r, gr ? x[i] * gr[view_channel(m, idx[i])] : x[i]};
        out->start[idx[i] + 1]++;
      }
      n_all += n;
      if (gg)
        for (int i = 0; i < n; ++i) gg[view_channel(m, idx[i])] += x[i] * view_dot(m, idx[i], g);
    } while (pos < end);
  }
  if (!err) out->entries = malloc((size_t)(n_all ? n_all : 1) * sizeof *out->entries);
  err = err || !out->entries;
  if (!err) {
    for (int64_t v = 0; v < m->vocab; ++v) out->start[v + 1] += out->start[v];
    int64_t *next = malloc((size_t)m->vocab * sizeof *next);
    err = !next;
    if (next) {
      memcpy(next, out->start, (size_t)m->vocab * sizeof *next);
      for (int64_t e = 0; e < n_all; ++e) out->entries[next[feat[e]]++] = list[e];
      free(next);
    }
  }
  free(feat), free(list);
  return err ? -3 : 0;
}

/* grad[v, d0 + 0 .. 16 nv) += sum over the threads' lists, in order, of s g[row, d0 ..]: the
 * table's gradient for feature v in registers, rows in increasing order. */
static inline __attribute__((always_inline)) void view_grad_tile(
    const int nv, const int parts, const view_hot_list *lists, const int64_t v,
    const float *restrict g, const int64_t dim, float *restrict grad) {
  vec16 a[8];
  for (int q = 0; q < nv; ++q) a[q] = *(const vec16 *)(grad + 16 * q);
  for (int t = 0; t < parts; ++t) {
    const view_entry *e = lists[t].entries;
    for (int64_t j = lists[t].start[v]; j < lists[t].start[v + 1]; ++j) {
      const float *gr = g + (int64_t)e[j].row * dim;
      for (int q = 0; q < nv; ++q) a[q] += e[j].s * *(const vec16 *)(gr + 16 * q);
    }
  }
  for (int q = 0; q < nv; ++q) *(vec16 *)(grad + 16 * q) = a[q];
}

/* Second pass of view_backward: grad_table rows [lo, hi) from every thread's lists. */
static void view_backward_table(const int parts, const view_hot_list *lists,
                                const int64_t lo, const int64_t hi, const int64_t dim,
                                const float *g, float *grad) {
  for (int64_t v = lo; v < hi; ++v) {
    float *t = grad + v * dim;
    int64_t d = 0;
    for (; d + 128 <= dim; d += 128) view_grad_tile(8, parts, lists, v, g + d, dim, t + d);
    if (d + 64 <= dim) view_grad_tile(4, parts, lists, v, g + d, dim, t + d), d += 64;
    if (d + 32 <= dim) view_grad_tile(2, parts, lists, v, g + d, dim, t + d), d += 32;
    if (d + 16 <= dim) view_grad_tile(1, parts, lists, v, g + d, dim, t + d), d += 16;
    for (; d < dim; ++d) { /* fused explicitly: contraction may differ between loop versions */
      float acc = t[d];
      for (int p = 0; p < parts; ++p)
        for (int64_t j = lists[p].start[v]; j < lists[p].start[v + 1]; ++j)
          acc = __builtin_fmaf(lists[p].entries[j].s,
                               g[(int64_t)lists[p].entries[j].row * dim + d], acc);
      t[d] = acc;
    }
  }
}

/* The backward of view_forward for grad_out [rows, dim]: grad_table [vocab, dim] += the table's
 * gradient, and, with a gate, grad_gate [rows, channels] = the gate's (written; NULL without a
 * gate). Two passes: each thread lists the hot features of its share of the rows (and writes
 * their gate gradients), grouped by feature; then each thread sums a share of the table's
 * rows in registers from every list, rows in increasing order, so that the sums do not depend
 * on the thread count and each table row is written once. Returns 0, view_check's code
 * (writing nothing) or -3 (out of memory; grad_gate may be partly written). */
static int view_backward_impl(const view_map *mp, float *grad_out, const int act,
                              const float *t, const float *d_t, float *grad_table,
                              float *grad_gate) {
  const view_map m = *mp;
  const int64_t rows = m.rows, k = m.k, vocab = m.vocab, dim = m.dim;
  const int bad = view_check(&m);
  if (bad) return bad;
  if (!grad_out || !grad_table || (m.gate && !grad_gate) || (!m.gate && grad_gate)) return -1;
  if (rows > INT32_MAX || (act != VIEW_LINEAR && (!t || !d_t))) return -1;
#ifdef _OPENMP
  const int most = omp_get_max_threads();
#else
  const int most = 1;
#endif
  view_hot_list *lists = calloc((size_t)most, sizeof *lists);
  if (!lists) return -3;
  int err = 0, parts = 1;
#ifdef _OPENMP
#pragma omp parallel if (rows * k * dim >= 4 * PARALLEL_MIN)
#endif
  {
    int64_t lo, hi, rlo, rhi;
    int me = 0;
#ifdef _OPENMP
    me = omp_get_thread_num();
#pragma omp single
    parts = omp_get_num_threads();
#endif
    my_share(rows, &rlo, &rhi);
    if (view_backward_rows(&m, rlo, rhi, grad_out, act, t, d_t, grad_gate, &lists[me])) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
      err = 1;
    }
#ifdef _OPENMP
#pragma omp barrier
#endif
    my_share(vocab, &lo, &hi);
    if (!err) view_backward_table(parts, lists, lo, hi, dim, grad_out, grad_table);
  }
  for (int t = 0; t < most; ++t) free(lists[t].entries), free(lists[t].start);
  free(lists);
  return err ? -3 : 0;
}

int view_backward(int64_t rows, int64_t view, int64_t k, int64_t vocab, int64_t channels,
                  int64_t dim, const uint8_t *obs, const int64_t *base, const float *gate,
                  const float *table, const float *grad_out, float *grad_table,
                  float *grad_gate) {
  const view_map m = view_map_of(rows, view, k, vocab, channels, dim, obs, base, gate, table);
  /* read only: without t the first pass does not write grad_out */
  return view_backward_impl(&m, (float *)grad_out, VIEW_LINEAR, NULL, NULL, grad_table, grad_gate);
}

/* The backward of view_forward_act from its output t [rows, dim] and that output's gradient
 * d_t: grad_pre [rows, dim] = d_t act'(t) (written: the gradient of out's entry value), then
 * the table's and gate's gradients as view_backward's from grad_pre. */
int view_backward_act(int64_t rows, int64_t view, int64_t k, int64_t vocab, int64_t channels,
                      int64_t dim, const uint8_t *obs, const int64_t *base, const float *gate,
                      const float *table, int64_t act, const float *t, const float *d_t,
                      float *grad_pre, float *grad_table, float *grad_gate) {
  const view_map m = view_map_of(rows, view, k, vocab, channels, dim, obs, base, gate, table);
  if (act != VIEW_TANH && act != VIEW_RELU) return -1;
  return view_backward_impl(&m, grad_pre, (int)act, t, d_t, grad_table, grad_gate);
}

/* ------------------------------------------------------------------------------------------
 * The actor-critic's acting step (rlgate.agents.fused_step): encoder, one core step and the
 * two heads of N envs in one call, where acting runs them module by module as some fifty
 * small PyTorch ops. Every stage works on whole rows, so that the envs are split over torch's
 * OpenMP threads in MR-row blocks, each thread running every stage for its rows, and a row's
 * arithmetic does not depend on the split. */

enum { CORE_LSTM = 0, CORE_GRU = 1 };

/* What policy_step reads and writes (rlgate.agents.fused_step.Args mirrors it). Weights are
 * the modules' transposed ([in, out], row-major); NULL where the model has no such part. */
typedef struct {
  int64_t n;        /* envs (rows) */
  int64_t extra;    /* F: the encoder's dense inputs (action features, reward feature, ...) */
  int64_t enc;      /* E: the encoder's output size, the core's input */
  int64_t view;     /* VIEW_NONE, VIEW_CODES (minigrid codes) or VIEW_GRID (a 0/1 grid) */
  int64_t k;        /* VIEW_CODES: code entries per row; VIEW_GRID: cells * channels */
  int64_t vocab;    /* rows of table: the one-hot features of the view (cells * channels) */
  int64_t channels; /* the view's channels per cell */
  int64_t core;     /* CORE_LSTM or CORE_GRU */
  int64_t mode;     /* CORE_LSTM: LSTM_UNTIED, _TIED, _REFINE or _MASTER; CORE_GRU: refine */
  int64_t chunk;    /* LSTM_MASTER's chunk size */
  int64_t hidden;   /* H */
  int64_t head;     /* Hd: the heads' hidden width, 0 for linear heads */
  int64_t params;   /* P: the policy head's outputs */
  int64_t gate;     /* 1: the heads read [h, view * sigmoid(h W_g + b_g)] (the view gate) */
  int64_t work_size; /* floats at work (policy_step_work(args) at least) */
  const float *w_extra, *b_extra; /* [F, E], [E] */
  const float *table;             /* [vocab, E]: the view's map */
  const float *w_pool;            /* [channels, E]: the map of the channel counts, or NULL */
  const float *w_ih, *b_ih;       /* [E, G], [G] */
  const float *w_hh, *b_hh;       /* [H, G], [G] (CORE_GRU) or NULL */
  const float *w_gate, *b_gate;   /* [H, channels], [channels] */
  const float *w1, *b1;           /* MLP heads: [in, 2 Hd], [2 Hd], policy's units then value's
                                     (in: H + E, or H + vocab with the view gate) */
  const float *w2, *b2;           /* [P + 1, 2 Hd] (out, in; block diagonal: the policy's
                                     outputs read its units, the value its own) or linear
                                     heads' [P + 1, D]; [P + 1] */
  const int64_t *base;            /* VIEW_CODES: [k] where entry j's one-hot starts */
  const float *e;                 /* [n, F] */
  const uint8_t *obs_view;        /* [n, k] codes or 0/1 grid */
  const uint8_t *first;           /* [n] 1 where the state resets before this step */
  const float *h0, *c0;           /* [n, H] (c0: CORE_LSTM) */
  float *h1, *c1;                 /* [n, H] the new state */
  float *out_params, *out_value;  /* [n, P], [n] */
  float *work;
} policy_step_args;

static size_t step_gates(const policy_step_args *s) {
  if (s->core == CORE_GRU) return (size_t)(s->mode ? 4 : 3) * s->hidden;
  return lstm_width((int)s->mode, (int)s->hidden, (int)s->chunk);
}

/* The width D of the heads' input as a buffer: [h, x] for MLP heads, h for linear ones; none
 * for the view-gate heads, which read h and the view's nonzero features directly. */
static size_t step_head_input(const policy_step_args *s) {
  if (s->gate) return 0;
  return (size_t)(s->head ? s->hidden + s->enc : s->hidden);
}

/* Floats of work per row. */
static size_t step_row_work(const policy_step_args *s) {
  const size_t G = step_gates(s), H = (size_t)s->hidden;
  const size_t heads = 2 * (size_t)s->head;
  const size_t last = (size_t)(s->channels > s->params + 1 ? s->channels : s->params + 1);
  return (size_t)s->enc + 3 * G + 3 * H + step_head_input(s) + heads + (size_t)s->vocab +
         (size_t)s->channels + last;
}

/* The floats policy_step needs at work. */
int64_t policy_step_work(const policy_step_args *s) {
  return (int64_t)((size_t)s->n * step_row_work(s));
}

/* out[b, j] = bias[j] + sum_k x[b, k] w[j, k]: x [B, K], w [N, K] (each output's weights
 * contiguous), out [B, N]. For outputs too few for small_matmul's column tiles (a policy's
 * logits and the value): a dot product per output, 16 products at a time. */
static void narrow_matmul(const int B, const int K, const int N, const float *x,
                          const float *w, const float *bias, float *out) {
  for (int b = 0; b < B; ++b) {
    const float *xb = x + (size_t)b * K;
    for (int j = 0; j < N; ++j) {
      const float *wj = w + (size_t)j * K;
      vec16 acc = {0};
      int k = 0;
      for (; k + 16 <= K; k += 16) acc += *(const vec16 *)(xb + k) * *(const vec16 *)(wj + k);
      float sum = 0.0f;
      for (int q = 0; q < 16; ++q) sum += acc[q];
      for (; k < K; ++k) sum += xb[k] * wj[k];
      out[(size_t)b * N + j] = bias[j] + sum;
    }
  }
}

/* The dense 0/1 view of rows [0, n) into v [n, vocab]. */
static void step_dense_view(const policy_step_args *s, const uint8_t *ov, const int n, float *v) {
  const size_t V = (size_t)s->vocab, K = (size_t)s->k;
  for (int b = 0; b < n; ++b) {
    float *vb = v + b * V;
    const uint8_t *ob = ov + b * K;
    if (s->view == VIEW_GRID) {
      for (size_t j = 0; j < V; ++j) vb[j] = (float)ob[j];
    } else {
      memset(vb, 0, V * sizeof(float));
      for (size_t j = 0; j < K; ++j) vb[s->base[j] + ob[j]] = 1.0f;
    }
  }
}

/* Rows lo .. lo + n - 1 of policy_step. */
static void policy_step_rows(const policy_step_args *s, const int lo, const int n) {
  const int F = (int)s->extra, E = (int)s->enc, H = (int)s->hidden, P = (int)s->params;
  const int Hd = (int)s->head, C = (int)s->channels;
  const size_t G = step_gates(s), D = step_head_input(s), V = (size_t)s->vocab;
  const size_t HW = 2 * (size_t)Hd;
  float *x = s->work + (size_t)lo * step_row_work(s); /* this thread's share of the work */
  float *xw = x + (size_t)n * E, *hw = xw + (size_t)n * G, *a = hw + (size_t)n * G;
  float *tc = a + (size_t)n * G, *hp = tc + (size_t)n * H, *cp = hp + (size_t)n * H;
  float *y = cp + (size_t)n * H, *hid = y + (size_t)n * D, *view = hid + (size_t)n * HW;
  float *counts = view + (size_t)n * V, *gate = counts + (size_t)n * C;
  const uint8_t *first = s->first + lo, *ov = s->obs_view ? s->obs_view + (size_t)lo * s->k : 0;
  const float *h0 = s->h0 + (size_t)lo * H;
  float *h1 = s->h1 + (size_t)lo * H;

  /* the encoder: relu(the view's map + (e W_extra + b_extra) + the counts' map) */
  if (s->view == VIEW_CODES) {
    onehot_rows(0, n, (int)s->k, s->vocab, E, ov, s->base, s->table, x);
  } else if (s->view == VIEW_GRID) {
    const view_map m =
        view_map_of(n, VIEW_GRID, s->k, s->vocab, s->channels, E, ov, NULL, NULL, s->table);
    view_rows(&m, 0, n, 0, 0, x);
  }
  small_matmul(n, F, E, s->e + (size_t)lo * F, s->w_extra, s->b_extra, 0, xw);
  if (s->view == VIEW_NONE) {
    memcpy(x, xw, (size_t)n * E * sizeof(float));
  } else {
#pragma omp simd
    for (size_t j = 0; j < (size_t)n * E; ++j) x[j] += xw[j];
  }
  if (s->w_pool) {
    step_dense_view(s, ov, n, view);
    for (int b = 0; b < n; ++b) {
      float *cb = counts + (size_t)b * C;
      memset(cb, 0, C * sizeof(float));
      for (size_t j = 0; j < V; ++j) cb[j % C] += view[b * V + j];
    }
    small_matmul(n, C, E, counts, s->w_pool, x, E, x);
  }
#pragma omp simd
  for (size_t j = 0; j < (size_t)n * E; ++j) x[j] = x[j] > 0.0f ? x[j] : 0.0f;

  /* the core: the state reset where first, then one step */
  memcpy(hp, h0, (size_t)n * H * sizeof(float));
  zero_rows(n, H, first, hp);
  small_matmul(n, E, (int)G, x, s->w_ih, s->b_ih, 0, xw);
  small_matmul(n, H, (int)G, hp, s->w_hh, s->b_hh, 0, hw);
  if (s->core == CORE_GRU) {
    gru_forward_rows((int)s->mode, 0, n, H, xw, hw, hp, a, h1);
  } else {
    memcpy(cp, s->c0 + (size_t)lo * H, (size_t)n * H * sizeof(float));
    zero_rows(n, H, first, cp);
    float *c1 = s->c1 + (size_t)lo * H;
    if (s->mode == LSTM_MASTER)
      master_forward_rows(0, n, H, (int)s->chunk, xw, hw, a, cp, c1, tc, h1);
    else
      lstm_forward_rows((int)s->mode, 0, n, H, xw, hw, a, cp, c1, tc, h1);
  }

  /* the heads */
  const float *last = y; /* the last layer's input: y, or the MLP heads' units */
  if (s->gate) {
    /* the first layer over [h, view * gate]: h's rows of w1 by a matmul, the gated view's
     * (w1's last V rows, a table) summed from the view's nonzero features alone */
    small_matmul(n, H, C, h1, s->w_gate, s->b_gate, 0, gate);
#pragma omp simd
    for (size_t j = 0; j < (size_t)n * C; ++j) gate[j] = sigmoid_f(gate[j]);
    small_matmul(n, H, 2 * Hd, h1, s->w1, s->b1, 0, hid);
    const view_map m = view_map_of(n, s->view, s->k, s->vocab, C, 2 * Hd, ov, s->base, gate,
                                   s->w1 + (size_t)H * 2 * Hd);
    view_rows(&m, 0, n, 1, 0, hid);
  } else {
    const size_t fw = D - H; /* the encoder features' width beside h */
    for (int b = 0; b < n; ++b) {
      memcpy(y + b * D, h1 + (size_t)b * H, H * sizeof(float));
      if (fw) memcpy(y + b * D + H, x + b * fw, fw * sizeof(float));
    }
    if (Hd) small_matmul(n, (int)D, 2 * Hd, y, s->w1, s->b1, 0, hid);
  }
  if (Hd) {
#pragma omp simd
    for (size_t j = 0; j < (size_t)n * 2 * Hd; ++j) hid[j] = tanh_f(hid[j]);
    last = hid;
  }
  float *out = gate; /* [n, P + 1]: free again */
  narrow_matmul(n, Hd ? 2 * Hd : (int)D, P + 1, last, s->w2, s->b2, out);
  for (int b = 0; b < n; ++b) {
    memcpy(s->out_params + (size_t)(lo + b) * P, out + (size_t)b * (P + 1), P * sizeof(float));
    s->out_value[lo + b] = out[(size_t)b * (P + 1) + P];
  }
}

/* Whether the sizes are ones policy_step can run, and every index of the view lies inside
 * table; 0 if so, else -1 (size or work), -2 (an index). */
static int policy_step_check(const policy_step_args *s) {
  if (s->n < 1 || s->extra < 1 || s->enc < 1 || s->hidden < 1 || s->params < 1 || s->head < 0)
    return -1;
  if (s->core == CORE_LSTM && s->mode == LSTM_MASTER && (s->chunk < 1 || s->hidden % s->chunk))
    return -1;
  if (!s->w_extra || !s->b_extra || !s->w_ih || !s->b_ih || !s->w_hh || !s->w2 || !s->b2 ||
      !s->e || !s->first || !s->h0 || !s->h1 || !s->out_params || !s->out_value || !s->work)
    return -1;
  if (s->core == CORE_LSTM ? !s->c0 || !s->c1 : !s->b_hh) return -1;
  if (s->view != VIEW_NONE && (!s->table || !s->obs_view)) return -1;
  if ((s->view == VIEW_CODES && !s->base) || (s->gate && (!s->w_gate || !s->b_gate))) return -1;
  if (s->head && (!s->w1 || !s->b1)) return -1;
  if (s->view < VIEW_NONE || s->view > VIEW_GRID || s->core < CORE_LSTM || s->core > CORE_GRU)
    return -1;
  if (s->view == VIEW_NONE && (s->gate || s->w_pool || s->vocab || s->k)) return -1;
  if (s->view != VIEW_NONE && (s->channels < 1 || s->vocab % s->channels || s->k < 1)) return -1;
  if (s->view == VIEW_GRID && s->k != s->vocab) return -1;
  if (s->gate && !s->head) return -1;
  if (s->work_size < policy_step_work(s)) return -1;
  if (s->view == VIEW_CODES && !onehot_in_range(s->n, (int)s->k, s->vocab, s->obs_view, s->base))
    return -2;
  return 0;
}

/* The acting step of N envs (see policy_step_args): writes h1 (and c1), out_params and
 * out_value. Returns 0, or policy_step_check's code (writing nothing): the caller raises. */
int policy_step(const policy_step_args *s) {
  const int bad = policy_step_check(s);
  if (bad) return bad;
  const double macs = (double)s->n * (double)step_gates(s) * (double)(s->enc + s->hidden);
  const int split = s->n >= 2 * MR && macs >= SEQUENCE_SPLIT_MIN;
  PARALLEL_SEQUENCE(split) {
    const row_range r = split ? my_rows((int)s->n) : (row_range){0, (int)s->n};
    if (r.n > 0) policy_step_rows(s, r.lo, r.n);
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------
 * PPO's clipped loss of a Categorical policy (rlgate.agents.ppo.categorical_ppo_loss), forward
 * and backward over n rows in one pass each, where torch runs some thirty small ops. The
 * log-probabilities come in as torch computed them (the same op as acting's, so that the first
 * epoch's ratios are exactly 1), transposed: logp [a, n]. Sums run in double. */

/* terms[0..4] = the policy loss, the value loss, the entropy, approx KL and the clip fraction
 * (means over the rows), kept[i] = the unclipped surrogate -A ratio where it is the larger
 * term (else 0) and ent[i] = row i's entropy, for the backward. The advantages are normalised
 * with (mean, std) = stats where stats is not NULL, else their own (std unbiased). Returns 0,
 * -1 (a size or pointer) or -2 (an action outside [0, a)), writing nothing. */
int ppo_categorical_forward(int64_t n, int64_t a, const float *logp, const int64_t *actions,
                            const float *old_logp, const float *adv, const float *stats,
                            const float *values, const float *returns, float clip,
                            float *kept, float *ent, double *terms) {
  if (n < 1 || a < 1 || !logp || !actions || !old_logp || !adv || !values || !returns ||
      !kept || !ent || !terms)
    return -1;
  for (int64_t i = 0; i < n; ++i)
    if (actions[i] < 0 || actions[i] >= a) return -2;
  float mean, std;
  if (stats) {
    mean = stats[0], std = stats[1];
  } else {
    double s = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; ++i) s += adv[i];
    const double m = s / (double)n;
    for (int64_t i = 0; i < n; ++i) ss += ((double)adv[i] - m) * ((double)adv[i] - m);
    mean = (float)m, std = (float)sqrt(n > 1 ? ss / (double)(n - 1) : NAN);
  }
  const float denom = std + 1e-8f;
  /* the entropies first, action by action: contiguous rows of logp, vectorisable */
  memset(ent, 0, (size_t)n * sizeof *ent);
  for (int64_t j = 0; j < a; ++j) {
    const float *lj = logp + j * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) ent[i] -= exp_f(lj[i]) * lj[i];
  }
  double policy = 0.0, value = 0.0, entropy = 0.0, kl = 0.0, clipped = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float log_ratio = logp[actions[i] * n + i] - old_logp[i];
    const float ratio = exp_f(log_ratio); /* exactly 1 at 0 */
    const float A = (adv[i] - mean) / denom;
    const float r_clip = fminf(fmaxf(ratio, 1.0f - clip), 1.0f + clip);
    const float un = -A * ratio, cl = -A * r_clip;
    kept[i] = un >= cl ? un : 0.0f;
    policy += un >= cl ? un : cl;
    entropy += ent[i];
    const float diff = values[i] - returns[i];
    value += (double)diff * diff;
    kl += (double)(ratio - 1.0f) - log_ratio;
    clipped += fabsf(ratio - 1.0f) > clip;
  }
  terms[0] = policy / n, terms[1] = 0.5 * value / n, terms[2] = entropy / n;
  terms[3] = kl / n, terms[4] = clipped / n;
  return 0;
}

/* The gradients of ppo_categorical_forward's terms, weighted d_policy, d_value and d_entropy:
 * d_logits [n, a] (row-major) and d_values [n]. Returns 0, or -1 / -2 as the forward. */
int ppo_categorical_backward(int64_t n, int64_t a, const float *logp, const int64_t *actions,
                             const float *kept, const float *ent, const float *values,
                             const float *returns, float d_policy, float d_value,
                             float d_entropy, float *d_logits, float *d_values) {
  if (n < 1 || a < 1 || !logp || !actions || !kept || !ent || !values || !returns ||
      !d_logits || !d_values)
    return -1;
  for (int64_t i = 0; i < n; ++i)
    if (actions[i] < 0 || actions[i] >= a) return -2;
  const float dp = d_policy / (float)n, dh = -d_entropy / (float)n, dv = d_value / (float)n;
  for (int64_t i = 0; i < n; ++i) {
    /* d policy / d log pi(a) = the kept surrogate / n; d log pi(a) / d logits = onehot(a) - p;
     * d H / d logits = -p (log p + H) */
    const float d_logp = kept[i] * dp;
    float *row = d_logits + i * a;
    for (int64_t j = 0; j < a; ++j) {
      const float l = logp[j * n + i], p = exp_f(l);
      row[j] = (l + ent[i]) * p * dh - p * d_logp;
    }
    row[actions[i]] += d_logp;
    d_values[i] = (values[i] - returns[i]) * dv;
  }
  return 0;
}
