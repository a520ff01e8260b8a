// kd_half: the fp16 / bf16 wire codec of kd-launch's collectives (src/comm/wire-dtype.ts), in C.
//
// A binding of its own, apart from kd_blas, because it needs nothing but a C compiler and node_api.h: every
// machine that can build C gets it, with or without OpenBLAS. The JS codec is the specification: every
// function here returns the same bits as its JS twin (test/comm/wire-dtype.test.ts compares them), so ranks
// on either path agree. The conversions are branch-free integer and float lane operations that gcc/clang
// vectorise at -O3; on x86-64 the same loops are compiled a second time for AVX2 (8 lanes where the SSE2
// baseline has 4), and fp16's encode and hops a third time with F16C's conversion instructions; the load picks
// the best the CPU runs (a CPUID check), and exports every variant for the tests.
//
// Floating point here must stay IEEE round-to-nearest-even without contraction (-std=c11 keeps
// -ffp-contract=off; never build with -ffast-math): the subnormal paths round by adding a magic constant.
// build.mjs passes -fno-trapping-math, without which gcc leaves the fp16 loops scalar (it will not speculate
// a float add into a select); it changes no value, only whether FP exception flags may be raised.
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_VARIANT 1
#include <cpuid.h>
#include <immintrin.h>
#endif

// The same block as the JS codec's fused hop (2048 elements): besides keeping a block's operands in L1, it
// makes the order of reads and writes identical when `out` overlaps `x`.
#define BLOCK 2048

INLINE uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

INLINE float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// ---- fp16 (IEEE binary16) ----------------------------------------------------------------------------------

// Every case is computed and the right one selected, so the loop has no branches and vectorises.
INLINE uint16_t f16_encode(float value) {
  const uint32_t u = bits_of(value);
  const uint32_t abs = u & 0x7fffffffu;
  // Normal half: rebias the exponent (127 → 15), round the 13 dropped bits to nearest even; a carry out of
  // the significand bumps the exponent, up to inf from 65520 on.
  const uint32_t r = abs - 0x38000000u;
  const uint32_t normal = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  // Subnormal half or zero: adding 0.5 puts the result's unit (2^-24) in the float's last place, so the FPU
  // rounds to nearest even for us (the JS codec shifts by 14..24 bits instead; same result).
  const uint32_t subnormal = bits_of(float_of(abs) + 0.5f) - 0x3f000000u;
  uint32_t h = abs < 0x38800000u ? subnormal : normal;
  h = abs >= 0x47800000u ? 0x7c00u : h;                          // ≥ 65536 or inf
  h = abs > 0x7f800000u ? (0x7e00u | ((abs >> 13) & 0x3ffu)) : h; // NaN: quiet, top of the payload kept
  return (uint16_t)(((u >> 16) & 0x8000u) | h);
}

// Exact. NaN payloads are shifted up unchanged, signalling ones included, as the JS decode table does.
INLINE float f16_decode(uint16_t half) {
  const uint32_t h = half;
  const uint32_t em = h & 0x7fffu;
  const uint32_t shifted = em << 13;
  const uint32_t normal = shifted + 0x38000000u; // rebias 15 → 127
  const uint32_t special = shifted | 0x7f800000u;
  // Subnormal half: 2^-14 · (1 + m/1024) − 2^-14 = m · 2^-24, exactly (and +0 for m = 0).
  const uint32_t subnormal = bits_of(float_of(shifted | 0x38800000u) - 6.103515625e-05f);
  uint32_t r = em >= 0x400u ? normal : subnormal;
  r = em >= 0x7c00u ? special : r;
  return float_of(((h & 0x8000u) << 16) | r);
}

// ---- bf16 (the upper half of an fp32) ----------------------------------------------------------------------

// Round to nearest even by adding below the cut (a carry reaches inf by itself); a NaN whose payload sits only
// in the dropped bits stays NaN (quiet).
INLINE uint16_t bf16_encode(float value) {
  const uint32_t u = bits_of(value);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

INLINE float bf16_decode(uint16_t half) { return float_of((uint32_t)half << 16); }

// ---- the kernels ------------------------------------------------------------------------------------------

typedef enum { FP16, BF16 } Format;
typedef enum { ENCODE, DECODE, ADD_INTO, ADD_ENCODE } Kind;
// How addEncode divides: not at all (divisor 1), in float (a divisor that is an fp32 value: the quotient
// rounded once to fp32 equals JS's double quotient rounded to fp32), or in double as JS does.
typedef enum { DIV_NONE, DIV_FLOAT, DIV_DOUBLE } DivMode;

typedef struct {
  Kind kind;
  Format format;
  size_t n;
  uint16_t *wire;
  uint16_t *into; // where addEncode writes the new wire values: `wire` itself, or another array
  float *x;       // encode's source, decode's and addInto's destination, addEncode's addend
  float *out;     // addEncode's optional copy of the new wire values (may be x itself)
  double divisor;
  DivMode div;
} Job;

INLINE uint16_t encode_as(Format f, float v) { return f == FP16 ? f16_encode(v) : bf16_encode(v); }
INLINE float decode_as(Format f, uint16_t h) { return f == FP16 ? f16_decode(h) : bf16_decode(h); }

// `left + right` as the JS codec computes it (`Math.fround(left + right)`): the double sum of two floats
// rounded to fp32 is the float sum (a double holds more than twice fp32's precision, so rounding twice is
// exact; likewise for the quotient below). When both are NaN, IEEE 754 leaves open whose payload the sum keeps
// and compilers may swap the operands, so the right one's is picked explicitly (quieted, by right + right), as
// V8's code for the JS loops keeps it on x86-64.
INLINE float add_js(float left, float right) { return right != right ? right + right : left + right; }

// With `f` and `div` constants at each call site, each loop below is specialised and vectorised on its own.
// `wire` and `into` (uint16_t) and the float arrays cannot alias under C's typing rules, so no runtime alias
// checks between them; `into` is `wire` or does not overlap it.
INLINE void hop(Format f, DivMode div, const uint16_t *wire, uint16_t *into, const float *x, float *out, size_t n,
                double d) {
  const float fd = (float)d;
  for (size_t s = 0; s < n; s += BLOCK) {
    const size_t e = n - s < BLOCK ? n : s + BLOCK;
    for (size_t i = s; i < e; i++) {
      float v = add_js(decode_as(f, wire[i]), x[i]); // JS: decoded + x
      if (div == DIV_FLOAT) v = v / fd;
      if (div == DIV_DOUBLE) v = (float)((double)v / d);
      into[i] = encode_as(f, v);
    }
    // From the codes just written (still in L1), so `out` holds exactly what every peer will decode.
    if (out)
      for (size_t i = s; i < e; i++) out[i] = decode_as(f, into[i]);
  }
}

INLINE void run_format(Format f, const Job *j) {
  uint16_t *wire = j->wire;
  float *x = j->x;
  const size_t n = j->n;
  switch (j->kind) {
  case ENCODE:
    for (size_t i = 0; i < n; i++) wire[i] = encode_as(f, x[i]);
    return;
  case DECODE:
    for (size_t i = 0; i < n; i++) x[i] = decode_as(f, wire[i]);
    return;
  case ADD_INTO:
    for (size_t i = 0; i < n; i++) x[i] = add_js(x[i], decode_as(f, wire[i])); // JS: dst += decoded
    return;
  case ADD_ENCODE:
    if (j->div == DIV_NONE) hop(f, DIV_NONE, wire, j->into, x, j->out, n, j->divisor);
    else if (j->div == DIV_FLOAT) hop(f, DIV_FLOAT, wire, j->into, x, j->out, n, j->divisor);
    else hop(f, DIV_DOUBLE, wire, j->into, x, j->out, n, j->divisor);
    return;
  }
}

INLINE void run(const Job *j) {
  if (j->format == FP16) run_format(FP16, j);
  else run_format(BF16, j);
}

static void run_baseline(const Job *j) { run(j); }

#ifdef HAVE_AVX2_VARIANT
__attribute__((target("avx2"))) static void run_avx2(const Job *j) { run(j); }

// fp16 with F16C: vcvtps2ph rounds to nearest even with subnormals and overflow to inf, and turns a NaN into
// sign | 0x7e00 | top 10 bits of its payload — the JS encoder's result in every case (native/half.c's tests and
// an exhaustive check over all 2^32 fp32 patterns agree). vcvtph2ps, though, quiets signalling NaNs, which the
// JS decoder keeps: it is used only where the value is then added (the sum quiets it anyway) or where the codes
// were just written by vcvtps2ph (always quiet); decodeInto keeps the portable loop.
#define F16C_TARGET __attribute__((target("avx2,f16c")))
#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

F16C_TARGET static inline __m256 add_js8(__m256 left, __m256 right) {
  const __m256 right_nan = _mm256_cmp_ps(right, right, _CMP_UNORD_Q);
  return _mm256_blendv_ps(_mm256_add_ps(left, right), _mm256_add_ps(right, right), right_nan);
}
F16C_TARGET static inline __m256 load8h(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
F16C_TARGET static inline void store8h(uint16_t *p, __m256 v) { _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(v, RNE)); }

F16C_TARGET static void run_f16c(const Job *j) {
  if (j->format != FP16 || j->kind == DECODE || (j->kind == ADD_ENCODE && j->div == DIV_DOUBLE)) {
    run_avx2(j);
    return;
  }
  uint16_t *wire = j->wire, *into = j->into;
  float *x = j->x, *out = j->out;
  const size_t n = j->n;
  size_t i = 0;
  if (j->kind == ENCODE) {
    for (; i + 8 <= n; i += 8) store8h(wire + i, _mm256_loadu_ps(x + i));
    for (; i < n; i++) wire[i] = f16_encode(x[i]);
  } else if (j->kind == ADD_INTO) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, add_js8(_mm256_loadu_ps(x + i), load8h(wire + i)));
    for (; i < n; i++) x[i] = add_js(x[i], f16_decode(wire[i]));
  } else {
    const bool divide = j->div == DIV_FLOAT;
    const float fd = (float)j->divisor;
    const __m256 d8 = _mm256_set1_ps(fd);
    for (size_t s = 0; s < n; s += BLOCK) {
      const size_t e = n - s < BLOCK ? n : s + BLOCK;
      for (i = s; i + 8 <= e; i += 8) {
        __m256 v = add_js8(load8h(wire + i), _mm256_loadu_ps(x + i));
        store8h(into + i, divide ? _mm256_div_ps(v, d8) : v);
      }
      for (; i < e; i++) {
        const float v = add_js(f16_decode(wire[i]), x[i]);
        into[i] = f16_encode(divide ? v / fd : v);
      }
      if (out) {
        for (i = s; i + 8 <= e; i += 8) _mm256_storeu_ps(out + i, load8h(into + i));
        for (; i < e; i++) out[i] = f16_decode(into[i]);
      }
    }
  }
}
#endif

// The loops compiled for each instruction set, best last; index = the variant tag of the exported functions.
typedef struct {
  const char *name;
  void (*run)(const Job *);
} Variant;
static const Variant variants[] = {
    {"baseline", run_baseline},
#ifdef HAVE_AVX2_VARIANT
    {"avx2", run_avx2},
    {"f16c", run_f16c},
#endif
};
#define VARIANTS (sizeof(variants) / sizeof(variants[0]))

static bool supported(size_t v) {
#ifdef HAVE_AVX2_VARIANT
  __builtin_cpu_init();
  if (v >= 1 && !__builtin_cpu_supports("avx2")) return false;
  // gcc 12 knows no "f16c" for __builtin_cpu_supports; CPUID.1:ECX bit 29 is the flag.
  if (v >= 2) {
    unsigned eax, ebx, ecx, edx;
    __cpuid(1, eax, ebx, ecx, edx);
    if (!(ecx & bit_F16C)) return false;
  }
#endif
  return v < VARIANTS;
}

// ---- Node-API ---------------------------------------------------------------------------------------------

// The elements of a typed array of the given type; false (with an exception pending) for anything else.
static bool typed(napi_env env, napi_value value, napi_typedarray_type want, void **data, size_t *length) {
  bool is_typed_array = false;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, value, &is_typed_array) != napi_ok || !is_typed_array ||
      napi_get_typedarray_info(env, value, &type, length, data, NULL, NULL) != napi_ok || type != want) {
    napi_throw_type_error(env, "KD_HALF",
                          want == napi_uint16_array ? "kd_half: expected a Uint16Array" : "kd_half: expected a Float32Array");
    return false;
  }
  return true;
}

// encode(src: Float32Array, dst: Uint16Array)       dst[i] = code(src[i]) for every i of src
// decode(src: Uint16Array, dst: Float32Array)       dst[i] = value(src[i]) for every i of dst
// addInto(src: Uint16Array, dst: Float32Array)      dst[i] += value(src[i])
// addEncode(wire: Uint16Array, x: Float32Array, divisor: number, out?: Float32Array, into?: Uint16Array)
//   wire[i] = code((value(wire[i]) + x[i]) / divisor) for every i of x; out[i] = value(new wire[i]);
//   with `into` (not overlapping `wire`), the new codes go there and `wire` is only read
// The function's data tags the format, the operation and the variant. Bounds are checked here, so a bad call
// throws instead of writing past an array.
static napi_value call(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  size_t argc = 5;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &data) != napi_ok) return NULL;
  const uintptr_t tag = (uintptr_t)data;
  Job j = {0};
  j.format = (Format)(tag & 1);
  j.kind = (Kind)((tag >> 1) & 3);
  const Variant *variant = &variants[tag >> 3];
  const size_t want = j.kind == ADD_ENCODE ? 3 : 2;
  if (argc < want) {
    napi_throw_type_error(env, "KD_HALF", "kd_half: missing arguments");
    return NULL;
  }
  void *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  if (j.kind == ENCODE) {
    if (!typed(env, argv[0], napi_float32_array, &a, &na) || !typed(env, argv[1], napi_uint16_array, &b, &nb))
      return NULL;
    if (nb < na) {
      napi_throw_range_error(env, "KD_HALF", "kd_half: encode's destination is shorter than its source");
      return NULL;
    }
    j.x = a;
    j.wire = b;
    j.n = na;
  } else {
    if (!typed(env, argv[0], napi_uint16_array, &a, &na) || !typed(env, argv[1], napi_float32_array, &b, &nb))
      return NULL;
    if (na < nb) {
      napi_throw_range_error(env, "KD_HALF", "kd_half: the wire holds fewer values than needed");
      return NULL;
    }
    j.wire = a;
    j.x = b;
    j.n = nb;
  }
  if (j.kind == ADD_ENCODE) {
    if (napi_get_value_double(env, argv[2], &j.divisor) != napi_ok) {
      napi_throw_type_error(env, "KD_HALF", "kd_half: addEncode's divisor must be a number");
      return NULL;
    }
    j.div = j.divisor == 1.0 ? DIV_NONE : (double)(float)j.divisor == j.divisor ? DIV_FLOAT : DIV_DOUBLE;
    napi_valuetype type = napi_undefined;
    if (argc > 3 && napi_typeof(env, argv[3], &type) != napi_ok) return NULL;
    if (type != napi_undefined && type != napi_null) {
      void *o = NULL;
      size_t no = 0;
      if (!typed(env, argv[3], napi_float32_array, &o, &no)) return NULL;
      if (no != j.n) {
        napi_throw_range_error(env, "KD_HALF", "kd_half: addEncode's out must have as many values as x");
        return NULL;
      }
      j.out = o;
    }
    j.into = j.wire;
    type = napi_undefined;
    if (argc > 4 && napi_typeof(env, argv[4], &type) != napi_ok) return NULL;
    if (type != napi_undefined && type != napi_null) {
      void *o = NULL;
      size_t no = 0;
      if (!typed(env, argv[4], napi_uint16_array, &o, &no)) return NULL;
      const uint16_t *lo = o, *hi = lo + no, *w = j.wire;
      if (no < j.n || (lo < w + j.n && w < hi && lo != w)) {
        napi_throw_range_error(env, "KD_HALF", "kd_half: addEncode's into is shorter than x or overlaps the wire");
        return NULL;
      }
      j.into = o;
    }
  }
  variant->run(&j);
  return NULL;
}

// Exports behave like a plain JS module's (writable, configurable), so tests can spy on them.
#define EXPORT (napi_writable | napi_enumerable | napi_configurable)
#define KERNEL(name, kind) \
  {name, NULL, call, NULL, NULL, NULL, EXPORT, (void *)(uintptr_t)((variant << 3) | ((kind) << 1) | (format))}

static napi_value kernels(napi_env env, size_t variant, Format format) {
  const napi_property_descriptor functions[] = {
      KERNEL("encode", ENCODE),
      KERNEL("decode", DECODE),
      KERNEL("addInto", ADD_INTO),
      KERNEL("addEncode", ADD_ENCODE),
  };
  napi_value object;
  if (napi_create_object(env, &object) != napi_ok ||
      napi_define_properties(env, object, sizeof(functions) / sizeof(functions[0]), functions) != napi_ok)
    return NULL;
  return object;
}

// { fp16, bf16 } of one variant's kernels.
static napi_value formats(napi_env env, size_t variant) {
  napi_value object, fp16 = kernels(env, variant, FP16), bf16 = kernels(env, variant, BF16);
  if (fp16 == NULL || bf16 == NULL || napi_create_object(env, &object) != napi_ok ||
      napi_set_named_property(env, object, "fp16", fp16) != napi_ok ||
      napi_set_named_property(env, object, "bf16", bf16) != napi_ok)
    return NULL;
  return object;
}

// exports: fp16 and bf16 (the fastest variant this CPU runs), variant (its name), and variants (every one it
// runs, by name, so that tests can hold each against the JS codec).
static napi_value init(napi_env env, napi_value exports) {
  size_t best = 0;
  napi_value all, name;
  bool ok = napi_create_object(env, &all) == napi_ok;
  for (size_t v = 0; ok && v < VARIANTS; v++) {
    if (!supported(v)) continue;
    const napi_value these = formats(env, v);
    ok = these != NULL && napi_set_named_property(env, all, variants[v].name, these) == napi_ok;
    best = v;
  }
  const napi_value fp16 = ok ? kernels(env, best, FP16) : NULL, bf16 = ok ? kernels(env, best, BF16) : NULL;
  if (!ok || fp16 == NULL || bf16 == NULL ||
      napi_create_string_utf8(env, variants[best].name, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_set_named_property(env, exports, "fp16", fp16) != napi_ok ||
      napi_set_named_property(env, exports, "bf16", bf16) != napi_ok ||
      napi_set_named_property(env, exports, "variant", name) != napi_ok ||
      napi_set_named_property(env, exports, "variants", all) != napi_ok) {
    napi_throw_error(env, "KD_HALF", "kd_half: could not build the module's exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
