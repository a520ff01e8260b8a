// kd_blas: single-precision GEMM on the system's OpenBLAS for kd-launch's TensorFlow.js kernels, and the loops
// that move data around those GEMMs (im2col, its adjoint, the max-pool gradient), twins of the JS loops in
// src/backend/blas/loops.ts, which are their specification: the same copies and the same fp32 adds in the same
// order, so the same bits.
//
// Plain C against Node-API (node_api.h) so one build serves every Node version. Every matrix argument is a
// Float32Array plus an element offset into it, and GEMM runs in place on its memory: the caller passes
// views of the wasm heap or of the cpu backend's arrays, so no tensor is ever copied. Because a wrong offset
// would scribble over the wasm heap, every call checks that each matrix lies inside its array first.
#include <cblas.h>
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 20

#define CHECK(env, call)                                                \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error((env), "KD_BLAS", "kd_blas: Node-API call failed: " #call); \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

typedef struct {
  napi_env env;
  napi_value *argv;
  size_t argc;
  bool failed;
} Args;

static void fail(Args *args, const char *message) {
  if (!args->failed) napi_throw_range_error(args->env, "KD_BLAS", message);
  args->failed = true;
}

static bool arg_bool(Args *args, size_t i) {
  bool value = false;
  if (args->failed) return false;
  if (i >= args->argc || napi_get_value_bool(args->env, args->argv[i], &value) != napi_ok) {
    fail(args, "kd_blas: expected a boolean argument");
  }
  return value;
}

static int64_t arg_int(Args *args, size_t i) {
  int64_t value = 0;
  if (args->failed) return 0;
  if (i >= args->argc || napi_get_value_int64(args->env, args->argv[i], &value) != napi_ok) {
    fail(args, "kd_blas: expected an integer argument");
    return 0;
  }
  if (value < 0 || value > INT32_MAX) fail(args, "kd_blas: integer argument out of range");
  return value;
}

static float arg_float(Args *args, size_t i) {
  double value = 0;
  if (args->failed) return 0;
  if (i >= args->argc || napi_get_value_double(args->env, args->argv[i], &value) != napi_ok) {
    fail(args, "kd_blas: expected a number argument");
  }
  return (float)value;
}

// A typed array's elements and length when it is one of `type`; NULL (with an exception pending) otherwise.
static void *arg_typed(Args *args, size_t i, napi_typedarray_type type, size_t *length, const char *message) {
  napi_typedarray_type actual;
  void *data = NULL;
  bool is_typed_array = false;
  *length = 0;
  if (args->failed) return NULL;
  if (i >= args->argc || napi_is_typedarray(args->env, args->argv[i], &is_typed_array) != napi_ok ||
      !is_typed_array ||
      napi_get_typedarray_info(args->env, args->argv[i], &actual, length, &data, NULL, NULL) != napi_ok ||
      actual != type) {
    fail(args, message);
    return NULL;
  }
  return data;
}

static float *arg_floats(Args *args, size_t i, size_t *length) {
  return arg_typed(args, i, napi_float32_array, length, "kd_blas: expected a Float32Array");
}

// Whether a row-major rows x cols matrix with leading dimension ld, starting at element offset, repeated
// count times stride elements apart, stays inside an array of length elements.
static bool fits(size_t length, int64_t offset, int64_t stride, int64_t count, int64_t rows, int64_t cols,
                 int64_t ld) {
  if (ld < (cols > 1 ? cols : 1)) return false;
  if (rows == 0 || cols == 0 || count == 0) return true;
  const int64_t last = offset + stride * (count - 1) + (rows - 1) * ld + cols;
  return last <= (int64_t)length;
}

typedef struct {
  float *data;
  int64_t ld, offset, stride;
} Matrix;

// Reads (array, ld, offset[, stride]) starting at argument i and checks the extent.
static Matrix arg_matrix(Args *args, size_t i, bool strided, int64_t count, int64_t rows, int64_t cols) {
  Matrix m = {0};
  size_t length = 0;
  m.data = arg_floats(args, i, &length);
  m.ld = arg_int(args, i + 1);
  m.offset = arg_int(args, i + 2);
  m.stride = strided ? arg_int(args, i + 3) : 0;
  if (!args->failed && !fits(length, m.offset, m.stride, count, rows, cols, m.ld)) {
    fail(args, "kd_blas: matrix does not fit its Float32Array (check ld, offset, stride and shape)");
  }
  return m;
}

// Shared by sgemm and sgemmBatched: the strided form has a stride after each offset and a batch count last.
static napi_value gemm(napi_env env, napi_callback_info info, bool strided) {
  napi_value argv[MAX_ARGS];
  size_t argc = MAX_ARGS;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  const size_t expected = strided ? 20 : 16;
  if (argc != expected) {
    napi_throw_type_error(env, "KD_BLAS", strided ? "kd_blas: sgemmBatched takes 20 arguments"
                                                  : "kd_blas: sgemm takes 16 arguments");
    return NULL;
  }
  Args args = {env, argv, argc, false};
  const size_t s = strided ? 1 : 0;
  const bool trans_a = arg_bool(&args, 0);
  const bool trans_b = arg_bool(&args, 1);
  const int64_t m = arg_int(&args, 2), n = arg_int(&args, 3), k = arg_int(&args, 4);
  const float alpha = arg_float(&args, 5);
  const int64_t batch = strided ? arg_int(&args, 19) : 1;
  const Matrix a = arg_matrix(&args, 6, strided, batch, trans_a ? k : m, trans_a ? m : k);
  const Matrix b = arg_matrix(&args, 9 + s, strided, batch, trans_b ? n : k, trans_b ? k : n);
  const float beta = arg_float(&args, 12 + 2 * s);
  const Matrix c = arg_matrix(&args, 13 + 2 * s, strided, batch, m, n);
  if (args.failed || m == 0 || n == 0) return NULL;
  for (int64_t i = 0; i < batch; i++) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a.data + a.offset + i * a.stride, (int)a.ld,
                b.data + b.offset + i * b.stride, (int)b.ld, beta, c.data + c.offset + i * c.stride, (int)c.ld);
  }
  return NULL;
}

// sgemm(transA, transB, M, N, K, alpha, A, lda, offsetA, B, ldb, offsetB, beta, C, ldc, offsetC)
// C = alpha * op(A) * op(B) + beta * C, row-major, offsets in elements.
static napi_value sgemm(napi_env env, napi_callback_info info) { return gemm(env, info, false); }

// sgemmBatched(transA, transB, M, N, K, alpha, A, lda, offsetA, strideA, B, ldb, offsetB, strideB, beta,
//              C, ldc, offsetC, strideC, batch): batch GEMMs stride elements apart; a stride of 0 reuses one
// operand for every product (a broadcast batch-1 operand) in one call instead of one call per product.
static napi_value sgemm_batched(napi_env env, napi_callback_info info) { return gemm(env, info, true); }

// ---- the loops around the GEMMs ------------------------------------------------------------------------------

static const int32_t *arg_ints(Args *args, size_t i, size_t *length) {
  return arg_typed(args, i, napi_int32_array, length, "kd_blas: expected an Int32Array");
}

// A conv's patch runs (triples [patch offset, input offset, length] within one image) and the images they are
// applied to; checked so that no run reaches outside its image's patch rows or input, nor an image outside its
// array: a wrong run would scribble over the wasm heap.
typedef struct {
  const int32_t *runs;
  size_t count;
  int64_t images, patch_per_image, input_per_image;
} Patches;

static Patches arg_patches(Args *args, size_t i) {
  Patches p = {0};
  p.runs = arg_ints(args, i, &p.count);
  p.images = arg_int(args, i + 1);
  p.patch_per_image = arg_int(args, i + 2);
  p.input_per_image = arg_int(args, i + 3);
  if (args->failed) return p;
  if (p.count % 3 != 0) fail(args, "kd_blas: patch runs come in triples");
  for (size_t r = 0; r + 2 < p.count && !args->failed; r += 3) {
    const int64_t to = p.runs[r], from = p.runs[r + 1], length = p.runs[r + 2];
    if (to < 0 || from < 0 || length < 0 || to + length > p.patch_per_image || from + length > p.input_per_image)
      fail(args, "kd_blas: a patch run lies outside its image");
  }
  return p;
}

static bool holds(Args *args, size_t length, int64_t offset, int64_t elements) {
  if (!args->failed && offset + elements > (int64_t)length) fail(args, "kd_blas: the images do not fit the array");
  return !args->failed;
}

// im2col(runs, images, patchPerImage, inputPerImage, complete, source, sourceOffset, patches): each image's input
// windows copied into its patch rows; the rest of the rows zeroed first unless the runs cover them (complete).
static napi_value im2col(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  size_t argc = MAX_ARGS;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Args args = {env, argv, argc, false};
  const Patches p = arg_patches(&args, 0);
  const bool complete = arg_bool(&args, 4);
  size_t source_length = 0, patches_length = 0;
  const float *source = arg_floats(&args, 5, &source_length);
  const int64_t source_offset = arg_int(&args, 6);
  float *patches = arg_floats(&args, 7, &patches_length);
  if (!holds(&args, source_length, source_offset, p.images * p.input_per_image) ||
      !holds(&args, patches_length, 0, p.images * p.patch_per_image))
    return NULL;
  if (!complete) memset(patches, 0, (size_t)(p.images * p.patch_per_image) * sizeof(float));
  for (int64_t image = 0; image < p.images; image++) {
    float *rows = patches + image * p.patch_per_image;
    const float *input = source + source_offset + image * p.input_per_image;
    for (size_t r = 0; r < p.count; r += 3) {
      float *restrict to = rows + p.runs[r];
      const float *restrict from = input + p.runs[r + 1];
      const int32_t length = p.runs[r + 2];
      // A call to memcpy costs more than it saves on a short run (a 3×3 filter over one channel: 3 elements).
      if (length >= 16) memcpy(to, from, (size_t)length * sizeof(float));
      else
        for (int32_t i = 0; i < length; i++) to[i] = from[i];
    }
  }
  return NULL;
}

// col2imAdd(runs, images, patchPerImage, inputPerImage, patches, dest, destOffset): the adjoint of im2col, each
// patch element added onto the input element it came from, image by image, run by run, in element order.
static napi_value col2im_add(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  size_t argc = MAX_ARGS;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Args args = {env, argv, argc, false};
  const Patches p = arg_patches(&args, 0);
  size_t patches_length = 0, dest_length = 0;
  const float *patches = arg_floats(&args, 4, &patches_length);
  float *dest = arg_floats(&args, 5, &dest_length);
  const int64_t dest_offset = arg_int(&args, 6);
  if (!holds(&args, patches_length, 0, p.images * p.patch_per_image) ||
      !holds(&args, dest_length, dest_offset, p.images * p.input_per_image))
    return NULL;
  for (int64_t image = 0; image < p.images; image++) {
    const float *rows = patches + image * p.patch_per_image;
    float *target = dest + dest_offset + image * p.input_per_image;
    for (size_t r = 0; r < p.count; r += 3) {
      const float *restrict from = rows + p.runs[r];
      float *restrict to = target + p.runs[r + 1];
      for (int32_t i = 0; i < p.runs[r + 2]; i++) to[i] += from[i];
    }
  }
  return NULL;
}

// sumColumns(x, xOffset, rows, columns, out, outOffset): out[j] = x[0][j] + x[1][j] + ... in fp32, row after row
// (each column's adds in row order, as the stock kernel sums: the same bits; the columns side by side vectorise).
static napi_value sum_columns(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  size_t argc = MAX_ARGS;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Args args = {env, argv, argc, false};
  size_t x_length = 0, out_length = 0;
  const float *x = arg_floats(&args, 0, &x_length);
  const int64_t x_offset = arg_int(&args, 1);
  const int64_t rows = arg_int(&args, 2), columns = arg_int(&args, 3);
  float *out = arg_floats(&args, 4, &out_length);
  const int64_t out_offset = arg_int(&args, 5);
  if (!args.failed && (rows < 0 || columns < 0)) fail(&args, "kd_blas: sumColumns of a negative shape");
  if (!holds(&args, x_length, x_offset, rows * columns) || !holds(&args, out_length, out_offset, columns))
    return NULL;
  float *restrict sums = out + out_offset;
  memset(sums, 0, (size_t)columns * sizeof(float));
  for (int64_t r = 0; r < rows; r++) {
    const float *restrict row = x + x_offset + r * columns;
    for (int64_t j = 0; j < columns; j++) sums[j] += row[j];
  }
  return NULL;
}

// maxPoolGrad(x, xOffset, dy, dyOffset, dx, dxOffset, batch, inHeight, inWidth, channels, outHeight, outWidth,
//             strideHeight, strideWidth, filterHeight, filterWidth, padTop, padLeft): dx written whole, each
// window's gradient on its maximum (the first in row-major order on ties; none for a window of NaN/-inf only).
static napi_value max_pool_grad(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  size_t argc = MAX_ARGS;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Args args = {env, argv, argc, false};
  size_t x_length = 0, dy_length = 0, dx_length = 0;
  const float *x = arg_floats(&args, 0, &x_length);
  const int64_t x_offset = arg_int(&args, 1);
  const float *dy = arg_floats(&args, 2, &dy_length);
  const int64_t dy_offset = arg_int(&args, 3);
  float *dx = arg_floats(&args, 4, &dx_length);
  const int64_t dx_offset = arg_int(&args, 5);
  int64_t g[12];
  for (size_t k = 0; k < 12; k++) g[k] = arg_int(&args, 6 + k);
  const int64_t batch = g[0], in_h = g[1], in_w = g[2], channels = g[3], out_h = g[4], out_w = g[5];
  const int64_t stride_h = g[6], stride_w = g[7], filter_h = g[8], filter_w = g[9], pad_top = g[10], pad_left = g[11];
  const int64_t in_size = batch * in_h * in_w * channels;
  // Positions are int32 (so the compare-and-select below vectorises): an array of more elements is refused.
  if (in_size > INT32_MAX) {
    napi_throw_range_error(env, "KD_BLAS", "kd_blas: maxPoolGrad over more than 2^31 elements");
    return NULL;
  }
  if (!holds(&args, x_length, x_offset, in_size) || !holds(&args, dx_length, dx_offset, in_size) ||
      !holds(&args, dy_length, dy_offset, batch * out_h * out_w * channels))
    return NULL;
  float *best = malloc((size_t)(channels > 0 ? channels : 1) * sizeof(float));
  int32_t *best_at = malloc((size_t)(channels > 0 ? channels : 1) * sizeof(int32_t));
  if (!best || !best_at) {
    free(best);
    free(best_at);
    napi_throw_error(env, "KD_BLAS", "kd_blas: out of memory");
    return NULL;
  }
  x += x_offset;
  dx += dx_offset;
  const float *dy_at = dy + dy_offset;
  memset(dx, 0, (size_t)in_size * sizeof(float));
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t oy = 0; oy < out_h; oy++) {
      const int64_t y0 = oy * stride_h - pad_top;
      const int64_t y_min = y0 > 0 ? y0 : 0, y_max = y0 + filter_h < in_h ? y0 + filter_h : in_h;
      for (int64_t ox = 0; ox < out_w; ox++) {
        const int64_t x0 = ox * stride_w - pad_left;
        const int64_t x_min = x0 > 0 ? x0 : 0, x_max = x0 + filter_w < in_w ? x0 + filter_w : in_w;
        for (int64_t c = 0; c < channels; c++) {
          best[c] = -INFINITY;
          best_at[c] = -1;
        }
        for (int64_t y = y_min; y < y_max; y++) {
          for (int64_t xi = x_min; xi < x_max; xi++) {
            const int32_t at = (int32_t)(((b * in_h + y) * in_w + xi) * channels);
            const float *restrict row = x + at;
            float *restrict top = best;
            int32_t *restrict top_at = best_at;
            // Branch-free, so that it vectorises: a mask of all ones where the value is above the best so far
            // (never for NaN, as in the JS), selecting the value and its position.
            for (int32_t c = 0; c < (int32_t)channels; c++) {
              const int32_t above = -(int32_t)(row[c] > top[c]);
              top[c] = row[c] > top[c] ? row[c] : top[c];
              top_at[c] = (top_at[c] & ~above) | ((at + c) & above);
            }
          }
        }
        for (int64_t c = 0; c < channels; c++, dy_at++)
          if (best_at[c] >= 0) dx[best_at[c]] += *dy_at;
      }
    }
  }
  free(best);
  free(best_at);
  return NULL;
}

static napi_status set_string(napi_env env, napi_value object, const char *key, const char *value) {
  napi_value js;
  const napi_status status = napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &js);
  return status == napi_ok ? napi_set_named_property(env, object, key, js) : status;
}

// info() -> { library, config, corename, threads }
static napi_value info(napi_env env, napi_callback_info cb) {
  (void)cb;
  napi_value result, threads;
  CHECK(env, napi_create_object(env, &result));
  CHECK(env, set_string(env, result, "library", "OpenBLAS"));
  CHECK(env, set_string(env, result, "config", openblas_get_config()));
  CHECK(env, set_string(env, result, "corename", openblas_get_corename()));
  CHECK(env, napi_create_int32(env, openblas_get_num_threads(), &threads));
  CHECK(env, napi_set_named_property(env, result, "threads", threads));
  return result;
}

// setThreads(n): the number of threads OpenBLAS uses for each call from now on.
static napi_value set_threads(napi_env env, napi_callback_info cb) {
  napi_value argv[1];
  size_t argc = 1;
  CHECK(env, napi_get_cb_info(env, cb, &argc, argv, NULL, NULL));
  Args args = {env, argv, argc, false};
  const int64_t n = arg_int(&args, 0);
  if (args.failed) return NULL;
  if (n < 1) {
    napi_throw_range_error(env, "KD_BLAS", "kd_blas: setThreads needs at least 1 thread");
    return NULL;
  }
  openblas_set_num_threads((int)n);
  return NULL;
}

// Exports behave like a plain JS module's (writable, configurable), so tests can spy on them.
#define EXPORT (napi_writable | napi_enumerable | napi_configurable)

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor functions[] = {
      {"sgemm", NULL, sgemm, NULL, NULL, NULL, EXPORT, NULL},
      {"sgemmBatched", NULL, sgemm_batched, NULL, NULL, NULL, EXPORT, NULL},
      {"info", NULL, info, NULL, NULL, NULL, EXPORT, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, EXPORT, NULL},
      {"im2col", NULL, im2col, NULL, NULL, NULL, EXPORT, NULL},
      {"col2imAdd", NULL, col2im_add, NULL, NULL, NULL, EXPORT, NULL},
      {"maxPoolGrad", NULL, max_pool_grad, NULL, NULL, NULL, EXPORT, NULL},
      {"sumColumns", NULL, sum_columns, NULL, NULL, NULL, EXPORT, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(functions) / sizeof(functions[0]), functions));
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
