// kd_optim: the element loops of an optimizer step (src/engine/step-kernels.ts): the gradient's statistics
// (scaling, Σg², the inf/NaN check), SGD, Adam/AdamW and LAMB, one pass each over the rank's shard, and the
// pruning mask applied to a gradient or to parameters.
//
// Each function is the twin of the JS kernel of the same name in step-kernels.ts, which is its specification:
// the same float64 operations in the same order, rounded to fp32 where the JS stores into a Float32Array, so
// the results are the same bits (-std=c11 keeps -ffp-contract=off; never -ffast-math). Sums run in the JS sums'
// order: LAMB's in element order, Σg² in eight interleaved partial sums (independent lanes, which the compiler
// vectorises without reassociating anything).
//
// The update loops are bound by float64 sqrt and division, so they are compiled for several instruction sets
// (vectorised IEEE operations round each element exactly as scalar ones: the same bits): the module's functions
// use the best this CPU runs (a CPUID check), and `variants` exports every one, for the tests.
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

// ---- the loops --------------------------------------------------------------------------------------------

INLINE void sgd_loop(float *p, const float *grads, float *buf, size_t n, double lr, double mu, double wd,
                     bool nesterov, bool first, double gs) {
  for (size_t i = 0; i < n; i++) {
    double g = (double)(float)(grads[i] * gs) + wd * p[i];
    if (buf) {
      const double b = first ? g : mu * buf[i] + g;
      buf[i] = (float)b;
      g = nesterov ? g + mu * b : b;
    }
    p[i] = (float)(p[i] - lr * g);
  }
}

INLINE void adam_loop(float *p, const float *grads, float *m, float *v, size_t n, double b1, double b2, double eps,
                      double step_size, double inv_sqrt_bc2, double l2, double decay, double gs) {
  const double c1 = 1 - b1, c2 = 1 - b2;
  for (size_t i = 0; i < n; i++) {
    const double pi = p[i];
    const double g = (double)(float)(grads[i] * gs) + l2 * pi;
    const double mi = b1 * m[i] + c1 * g;
    const double vi = b2 * v[i] + c2 * g * g;
    m[i] = (float)mi;
    v[i] = (float)vi;
    p[i] = (float)(pi * decay - (step_size * mi) / (sqrt(vi) * inv_sqrt_bc2 + eps));
  }
}

// LAMB's element-wise pass over [from, to); the sums, in element order, read back what it stored.
INLINE void lamb_loop(const float *p, const float *grads, float *m, float *v, float *u, size_t from, size_t to,
                      double b1, double b2, double eps, double wd, double gs) {
  for (size_t i = from; i < to; i++) {
    const double g = (float)(grads[i] * gs);
    m[i] = (float)(b1 * m[i] + (1 - b1) * g);
    v[i] = (float)(b2 * v[i] + (1 - b2) * g * g);
    u[i] = (float)(m[i] / (sqrt((double)v[i]) + eps) + wd * p[i]);
  }
}

// Σ g² over [from, to) in float64: element from + 8k + j into partial sum j, the sums combined pairwise, then
// the tail's own sum added. One running sum would wait on each add's latency (1.9 ms over 1.86 M elements).
INLINE double sum_squares_loop(const float *g, size_t from, size_t to) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = from;
  for (; to - i >= 8; i += 8)
    for (size_t j = 0; j < 8; j++) s[j] += (double)g[i + j] * g[i + j];
  double tail = 0;
  for (; i < to; i++) tail += (double)g[i] * g[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + tail;
}

typedef struct {
  const char *name;
  double (*sum_squares)(const float *, size_t, size_t);
  void (*sgd)(float *, const float *, float *, size_t, double, double, double, bool, bool, double);
  void (*adam)(float *, const float *, float *, float *, size_t, double, double, double, double, double, double,
               double, double);
  void (*lamb)(const float *, const float *, float *, float *, float *, size_t, size_t, double, double, double,
               double, double);
} Variant;

#define VARIANT(suffix, attributes)                                                                                \
  attributes static double sum_squares_##suffix(const float *g, size_t from, size_t to) {                          \
    return sum_squares_loop(g, from, to);                                                                         \
  }                                                                                                               \
  attributes static void sgd_##suffix(float *p, const float *g, float *buf, size_t n, double lr, double mu,        \
                                      double wd, bool nesterov, bool first, double gs) {                           \
    sgd_loop(p, g, buf, n, lr, mu, wd, nesterov, first, gs);                                                      \
  }                                                                                                               \
  attributes static void adam_##suffix(float *p, const float *g, float *m, float *v, size_t n, double b1,         \
                                       double b2, double eps, double ss, double ib, double l2, double decay,       \
                                       double gs) {                                                               \
    adam_loop(p, g, m, v, n, b1, b2, eps, ss, ib, l2, decay, gs);                                                 \
  }                                                                                                               \
  attributes static void lamb_##suffix(const float *p, const float *g, float *m, float *v, float *u, size_t from,  \
                                       size_t to, double b1, double b2, double eps, double wd, double gs) {       \
    lamb_loop(p, g, m, v, u, from, to, b1, b2, eps, wd, gs);                                                      \
  }

VARIANT(baseline, )
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_VARIANTS 1
VARIANT(avx2, __attribute__((target("avx2"))))
VARIANT(avx512, __attribute__((target("avx512f"))))
#endif

// Best last; a function's data is the index of its variant.
static const Variant variants[] = {
    {"baseline", sum_squares_baseline, sgd_baseline, adam_baseline, lamb_baseline},
#ifdef HAVE_X86_VARIANTS
    {"avx2", sum_squares_avx2, sgd_avx2, adam_avx2, lamb_avx2},
    {"avx512", sum_squares_avx512, sgd_avx512, adam_avx512, lamb_avx512},
#endif
};
#define VARIANTS (sizeof(variants) / sizeof(variants[0]))

static bool supported(size_t v) {
#ifdef HAVE_X86_VARIANTS
  __builtin_cpu_init();
  if (v >= 1 && !__builtin_cpu_supports("avx2")) return false;
  if (v >= 2 && !__builtin_cpu_supports("avx512f")) return false;
#endif
  return v < VARIANTS;
}

// ---- Node-API ---------------------------------------------------------------------------------------------

#define MAX_ARGS 16

// One call's arguments, read by a format: 'f' a Float32Array, 'o' a Float32Array or undefined (NULL),
// 'u' a Uint8Array, 'd' a number, 'b' a boolean; argument i lands at index i of the array its letter names.
// Lengths are checked by the caller (`same_length`).
typedef struct {
  float *f[MAX_ARGS];
  uint8_t *u[MAX_ARGS];
  size_t n[MAX_ARGS];
  double d[MAX_ARGS];
  bool b[MAX_ARGS];
  // The instruction set of the function called (its data).
  const Variant *variant;
} Args;

static bool fail(napi_env env, const char *message) {
  napi_throw_type_error(env, "KD_OPTIM", message);
  return false;
}

static bool read_args(napi_env env, napi_callback_info info, const char *format, const char *usage, Args *a) {
  napi_value argv[MAX_ARGS];
  size_t argc = MAX_ARGS;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &data) != napi_ok) return fail(env, usage);
  a->variant = &variants[(uintptr_t)data];
  size_t at = 0;
  for (const char *c = format; *c; c++) {
    if (at >= argc) return fail(env, usage);
    napi_value v = argv[at];
    napi_valuetype type;
    if (napi_typeof(env, v, &type) != napi_ok) return fail(env, usage);
    if (*c == 'd') {
      if (napi_get_value_double(env, v, &a->d[at]) != napi_ok) return fail(env, usage);
    } else if (*c == 'b') {
      if (napi_get_value_bool(env, v, &a->b[at]) != napi_ok) return fail(env, usage);
    } else if (*c == 'o' && type == napi_undefined) {
      a->f[at] = NULL;
      a->n[at] = 0;
    } else {
      bool is_typed = false;
      napi_typedarray_type kind;
      void *elements = NULL;
      const napi_typedarray_type wanted = *c == 'u' ? napi_uint8_array : napi_float32_array;
      if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed ||
          napi_get_typedarray_info(env, v, &kind, &a->n[at], &elements, NULL, NULL) != napi_ok || kind != wanted)
        return fail(env, usage);
      if (*c == 'u')
        a->u[at] = elements;
      else
        a->f[at] = elements;
    }
    at++;
  }
  return true;
}

// The Float32Arrays of `a` at the indices in `which` (ended by -1) have `n` elements each.
static bool same_length(napi_env env, const Args *a, const int *which, size_t n) {
  for (; *which >= 0; which++) {
    if (a->f[*which] != NULL && a->n[*which] != n) {
      napi_throw_range_error(env, "KD_OPTIM", "kd_optim: the arrays differ in length");
      return false;
    }
  }
  return true;
}

static bool range_within(napi_env env, double from, double to, size_t n) {
  if (!(from >= 0 && from <= to && to <= (double)n && from == floor(from) && to == floor(to))) {
    napi_throw_range_error(env, "KD_OPTIM", "kd_optim: [from, to) is not a range of the array");
    return false;
  }
  return true;
}

// [x, y] as a JS array (NULL, an exception pending, if it cannot be made).
static napi_value pair(napi_env env, double x, double y) {
  napi_value out, first, second;
  if (napi_create_double(env, x, &first) != napi_ok || napi_create_double(env, y, &second) != napi_ok ||
      napi_create_array_with_length(env, 2, &out) != napi_ok || napi_set_element(env, out, 0, first) != napi_ok ||
      napi_set_element(env, out, 1, second) != napi_ok)
    return NULL;
  return out;
}

// gradStats(grads, scale, from, to, checkFinite): [Σg² over [from, to) in float64, 1 if any element of grads
// is inf or NaN else 0]; every element is first multiplied by `scale` (rounded to fp32) unless it is 1.
static napi_value grad_stats(napi_env env, napi_callback_info info) {
  Args a;
  if (!read_args(env, info, "fdddb", "kd_optim: gradStats(grads, scale, from, to, checkFinite)", &a)) return NULL;
  float *g = a.f[0];
  const size_t n = a.n[0];
  const double scale = a.d[1];
  if (!range_within(env, a.d[2], a.d[3], n)) return NULL;
  const size_t from = (size_t)a.d[2], to = (size_t)a.d[3];
  if (scale != 1)
    for (size_t i = 0; i < n; i++) g[i] = (float)(g[i] * scale);
  int non_finite = 0;
  if (a.b[4])
    for (size_t i = 0; i < n; i++) non_finite |= !isfinite(g[i]);
  return pair(env, non_finite ? 0 : a.variant->sum_squares(g, from, to), non_finite);
}

// sgd(params, grads, buf | undefined, lr, momentum, weightDecay, nesterov, first, gradScale)
static napi_value sgd(napi_env env, napi_callback_info info) {
  Args a;
  if (!read_args(env, info, "ffodddbbd",
                 "kd_optim: sgd(params, grads, buf, lr, momentum, weightDecay, nesterov, first, gradScale)", &a))
    return NULL;
  float *p = a.f[0], *grads = a.f[1], *buf = a.f[2];
  const size_t n = a.n[0];
  if (!same_length(env, &a, (const int[]){1, 2, -1}, n)) return NULL;
  a.variant->sgd(p, grads, buf, n, a.d[3], a.d[4], a.d[5], a.b[6], a.b[7], a.d[8]);
  return NULL;
}

// adam(params, grads, m, v, b1, b2, eps, stepSize, invSqrtBc2, l2, decay, gradScale)
static napi_value adam(napi_env env, napi_callback_info info) {
  Args a;
  if (!read_args(env, info, "ffffdddddddd",
                 "kd_optim: adam(params, grads, m, v, b1, b2, eps, stepSize, invSqrtBc2, l2, decay, gradScale)",
                 &a))
    return NULL;
  float *p = a.f[0], *grads = a.f[1], *m = a.f[2], *v = a.f[3];
  const size_t n = a.n[0];
  if (!same_length(env, &a, (const int[]){1, 2, 3, -1}, n)) return NULL;
  a.variant->adam(p, grads, m, v, n, a.d[4], a.d[5], a.d[6], a.d[7], a.d[8], a.d[9], a.d[10], a.d[11]);
  return NULL;
}

// lambMoments(params, grads, m, v, u, from, to, b1, b2, eps, weightDecay, gradScale): the moments and the
// update direction u over [from, to); returns [Σp², Σu²] over that range, in float64.
static napi_value lamb_moments(napi_env env, napi_callback_info info) {
  Args a;
  if (!read_args(env, info, "fffffddddddd",
                 "kd_optim: lambMoments(params, grads, m, v, u, from, to, b1, b2, eps, weightDecay, gradScale)",
                 &a))
    return NULL;
  float *p = a.f[0], *grads = a.f[1], *m = a.f[2], *v = a.f[3], *u = a.f[4];
  const size_t n = a.n[0];
  if (!same_length(env, &a, (const int[]){1, 2, 3, 4, -1}, n) || !range_within(env, a.d[5], a.d[6], n))
    return NULL;
  const size_t from = (size_t)a.d[5], to = (size_t)a.d[6];
  a.variant->lamb(p, grads, m, v, u, from, to, a.d[7], a.d[8], a.d[9], a.d[10], a.d[11]);
  double w2 = 0, u2 = 0;
  for (size_t i = from; i < to; i++) {
    w2 += (double)p[i] * p[i];
    u2 += (double)u[i] * u[i];
  }
  return pair(env, w2, u2);
}

// lambApply(params, u, from, to, scale): params -= scale·u over [from, to).
static napi_value lamb_apply(napi_env env, napi_callback_info info) {
  Args a;
  if (!read_args(env, info, "ffddd", "kd_optim: lambApply(params, u, from, to, scale)", &a)) return NULL;
  float *p = a.f[0], *u = a.f[1];
  const size_t n = a.n[0];
  if (!same_length(env, &a, (const int[]){1, -1}, n) || !range_within(env, a.d[2], a.d[3], n)) return NULL;
  const double scale = a.d[4];
  for (size_t i = (size_t)a.d[2]; i < (size_t)a.d[3]; i++) p[i] = (float)(p[i] - scale * u[i]);
  return NULL;
}

// maskZero(values, mask, from, to): values[i] = 0 where mask[i] is 0, over [from, to) (a Float32Array and a
// Uint8Array of one length). Written as a select, not a branch: the compiler vectorises it, and a pruned
// weight stays +0 whatever it held.
static napi_value mask_zero(napi_env env, napi_callback_info info) {
  Args a;
  if (!read_args(env, info, "fudd", "kd_optim: maskZero(values, mask, from, to)", &a)) return NULL;
  float *values = a.f[0];
  const uint8_t *mask = a.u[1];
  const size_t n = a.n[0];
  if (a.n[1] != n) {
    napi_throw_range_error(env, "KD_OPTIM", "kd_optim: the arrays differ in length");
    return NULL;
  }
  if (!range_within(env, a.d[2], a.d[3], n)) return NULL;
  for (size_t i = (size_t)a.d[2]; i < (size_t)a.d[3]; i++) values[i] = mask[i] ? values[i] : 0.0f;
  return NULL;
}

#define KERNEL(name, fn, v) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, (void *)(uintptr_t)(v)}

// The kernels of variant v as properties of `object`.
static bool define_kernels(napi_env env, napi_value object, size_t v) {
  const napi_property_descriptor functions[] = {
      KERNEL("gradStats", grad_stats, v), KERNEL("sgd", sgd, v),          KERNEL("adam", adam, v),
      KERNEL("lambMoments", lamb_moments, v), KERNEL("lambApply", lamb_apply, v),
      KERNEL("maskZero", mask_zero, v),
  };
  return napi_define_properties(env, object, sizeof functions / sizeof functions[0], functions) == napi_ok;
}

// exports: the kernels of the best variant this CPU runs, `variant` (its name) and `variants` (each one it runs,
// by name).
static napi_value init(napi_env env, napi_value exports) {
  size_t best = 0;
  napi_value all, name;
  bool ok = napi_create_object(env, &all) == napi_ok;
  for (size_t v = 0; ok && v < VARIANTS && supported(v); v++) {
    napi_value these;
    ok = napi_create_object(env, &these) == napi_ok && define_kernels(env, these, v) &&
         napi_set_named_property(env, all, variants[v].name, these) == napi_ok;
    best = v;
  }
  ok = ok && define_kernels(env, exports, best) &&
       napi_create_string_utf8(env, variants[best].name, NAPI_AUTO_LENGTH, &name) == napi_ok &&
       napi_set_named_property(env, exports, "variant", name) == napi_ok &&
       napi_set_named_property(env, exports, "variants", all) == napi_ok;
  if (!ok) {
    napi_throw_error(env, "KD_OPTIM", "kd_optim: could not build the module's exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
