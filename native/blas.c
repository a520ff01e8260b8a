// kd_blas: single-precision GEMM on the system's OpenBLAS for kd-launch's TensorFlow.js kernels.
//
// Plain C against Node-API (node_api.h) so one build serves every Node version. Every matrix argument is a
// Float32Array plus an element offset into it, and GEMM runs in place on its memory: the caller passes
// views of the wasm heap or of the cpu backend's arrays, so no tensor is ever copied. Because a wrong offset
// would scribble over the wasm heap, every call checks that each matrix lies inside its array first.
#include <cblas.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

// A Float32Array's elements and length; NULL (with an exception pending) when the argument is anything else.
static float *arg_floats(Args *args, size_t i, size_t *length) {
  napi_typedarray_type type;
  void *data = NULL;
  bool is_typed_array = false;
  *length = 0;
  if (args->failed) return NULL;
  if (i >= args->argc || napi_is_typedarray(args->env, args->argv[i], &is_typed_array) != napi_ok ||
      !is_typed_array ||
      napi_get_typedarray_info(args->env, args->argv[i], &type, length, &data, NULL, NULL) != napi_ok ||
      type != napi_float32_array) {
    fail(args, "kd_blas: expected a Float32Array");
    return NULL;
  }
  return (float *)data;
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
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(functions) / sizeof(functions[0]), functions));
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
