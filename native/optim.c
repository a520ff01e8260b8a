// kd_optim: the element loops of an optimizer step (src/engine/step-kernels.ts): the gradient's statistics
// (scaling, Σg², the inf/NaN check), SGD, Adam/AdamW and LAMB, one pass each over the rank's shard.
//
// Each function is the twin of the JS kernel of the same name in step-kernels.ts, which is its specification:
// the same float64 operations in the same order, rounded to fp32 where the JS stores into a Float32Array, so
// the results are the same bits (-std=c11 keeps -ffp-contract=off; never -ffast-math). Sums run in element
// order, as the JS sums do: the compiler vectorises the per-element arithmetic, not the reductions.
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_ARGS 16

// One call's arguments, read by a format: 'f' a Float32Array, 'o' a Float32Array or undefined (NULL),
// 'd' a number, 'b' a boolean. All Float32Arrays of a call have `length` elements unless their letter is
// followed by '*' (any length).
typedef struct {
  float *f[MAX_ARGS];
  size_t n[MAX_ARGS];
  double d[MAX_ARGS];
  bool b[MAX_ARGS];
} Args;

static bool fail(napi_env env, const char *message) {
  napi_throw_type_error(env, "KD_OPTIM", message);
  return false;
}

static bool read_args(napi_env env, napi_callback_info info, const char *format, const char *usage, Args *a) {
  napi_value argv[MAX_ARGS];
  size_t argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return fail(env, usage);
  size_t at = 0;
  for (const char *c = format; *c; c++) {
    if (*c == '*') continue;
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
      void *data = NULL;
      if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed ||
          napi_get_typedarray_info(env, v, &kind, &a->n[at], &data, NULL, NULL) != napi_ok ||
          kind != napi_float32_array)
        return fail(env, usage);
      a->f[at] = data;
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

static napi_value number(napi_env env, double x) {
  napi_value out;
  return napi_create_double(env, x, &out) == napi_ok ? out : NULL;
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
  double sum = 0;
  if (!non_finite)
    for (size_t i = from; i < to; i++) sum += (double)g[i] * g[i];
  napi_value out, items[2] = {number(env, sum), number(env, non_finite)};
  if (napi_create_array_with_length(env, 2, &out) != napi_ok || napi_set_element(env, out, 0, items[0]) != napi_ok ||
      napi_set_element(env, out, 1, items[1]) != napi_ok)
    return NULL;
  return out;
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
  const double lr = a.d[3], mu = a.d[4], wd = a.d[5], gs = a.d[8];
  const bool nesterov = a.b[6], first = a.b[7];
  for (size_t i = 0; i < n; i++) {
    double g = (double)(float)(grads[i] * gs) + wd * p[i];
    if (buf) {
      const double b = first ? g : mu * buf[i] + g;
      buf[i] = (float)b;
      g = nesterov ? g + mu * b : b;
    }
    p[i] = (float)(p[i] - lr * g);
  }
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
  const double b1 = a.d[4], b2 = a.d[5], eps = a.d[6], step_size = a.d[7], inv_sqrt_bc2 = a.d[8], l2 = a.d[9],
               decay = a.d[10], gs = a.d[11];
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
  const double b1 = a.d[7], b2 = a.d[8], eps = a.d[9], wd = a.d[10], gs = a.d[11];
  // Two passes: the element-wise one vectorises; the sums, in element order, read back what it stored.
  for (size_t i = from; i < to; i++) {
    const double g = (float)(grads[i] * gs);
    m[i] = (float)(b1 * m[i] + (1 - b1) * g);
    v[i] = (float)(b2 * v[i] + (1 - b2) * g * g);
    u[i] = (float)(m[i] / (sqrt((double)v[i]) + eps) + wd * p[i]);
  }
  double w2 = 0, u2 = 0;
  for (size_t i = from; i < to; i++) {
    w2 += (double)p[i] * p[i];
    u2 += (double)u[i] * u[i];
  }
  napi_value out;
  if (napi_create_array_with_length(env, 2, &out) != napi_ok ||
      napi_set_element(env, out, 0, number(env, w2)) != napi_ok ||
      napi_set_element(env, out, 1, number(env, u2)) != napi_ok)
    return NULL;
  return out;
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

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor functions[] = {
      {"gradStats", NULL, grad_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sgd", NULL, sgd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"adam", NULL, adam, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lambMoments", NULL, lamb_moments, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lambApply", NULL, lamb_apply, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions) != napi_ok) {
    napi_throw_error(env, "KD_OPTIM", "kd_optim: could not build the module's exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
