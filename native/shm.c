// kd_shm: the shared-memory data plane of kd-launch's collectives (src/comm/shm-ring.ts): maps a ring file
// that ranks on one node share, makes and rings the ring's doorbell (a FIFO), and reduces fp32 values straight
// out of the ring.
//
// A binding of its own, like kd_half, because it needs nothing but a C compiler, node_api.h and POSIX mmap.
// Node can neither map a file nor make a FIFO; everything else about the ring (its layout, who writes which cursor, what a frame
// may claim) stays in TypeScript, where it is tested. The fp32 loops are the twins of src/comm/reduce-op.ts
// and of the fp32 codec's addEncode: same operations in the same order, so the same bits (no contraction:
// -std=c11 keeps -ffp-contract=off; never -ffast-math).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- mapping ---------------------------------------------------------------------------------------------

static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

static void throw_errno(napi_env env, const char *what, const char *path) {
  char message[512];
  snprintf(message, sizeof message, "kd_shm: %s %s: %s", what, path, strerror(errno));
  napi_throw_error(env, "KD_SHM", message);
}

// map(path: string, bytes: number, create: boolean): ArrayBuffer
//   create: a new file (O_EXCL, mode 0600) of `bytes` zero bytes; else an existing one, which must be a regular
//   file owned by this user of `bytes` bytes (0: of whatever size it has, 4 KiB to 2 GiB). The mapping is shared; it is unmapped when the ArrayBuffer
//   is collected. The file descriptor is closed at once: the mapping keeps the memory.
static napi_value map(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  char path[4096];
  size_t path_length = 0;
  double bytes_value = 0;
  bool create = false;
  if (argc < 3 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_length) != napi_ok ||
      napi_get_value_double(env, argv[1], &bytes_value) != napi_ok ||
      napi_get_value_bool(env, argv[2], &create) != napi_ok) {
    napi_throw_type_error(env, "KD_SHM", "kd_shm: map(path: string, bytes: number, create: boolean)");
    return NULL;
  }
  if (!(bytes_value >= 4096 && bytes_value <= (double)(1ull << 31)) && (create || bytes_value != 0)) {
    napi_throw_range_error(env, "KD_SHM", "kd_shm: a ring maps 4 KiB to 2 GiB");
    return NULL;
  }
  size_t bytes = (size_t)bytes_value;
  const int fd = create ? open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)
                        : open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, create ? "cannot create" : "cannot open", path);
    return NULL;
  }
  struct stat st;
  if (create ? ftruncate(fd, (off_t)bytes) != 0 : fstat(fd, &st) != 0) {
    throw_errno(env, "cannot size", path);
    close(fd);
    return NULL;
  }
  if (!create && bytes == 0 && st.st_size >= 4096 && st.st_size <= (off_t)(1ull << 31)) bytes = (size_t)st.st_size;
  if (!create && (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (size_t)st.st_size != bytes)) {
    close(fd);
    char message[512];
    snprintf(message, sizeof message, "kd_shm: %s is not a ring owned by this user (4 KiB to 2 GiB)", path);
    napi_throw_error(env, "KD_SHM", message);
    return NULL;
  }
  void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (memory == MAP_FAILED) {
    throw_errno(env, "cannot map", path);
    return NULL;
  }
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, memory, bytes, unmap, (void *)(uintptr_t)bytes, &buffer) != napi_ok) {
    munmap(memory, bytes);
    return NULL;
  }
  return buffer;
}

// populate(ring: ArrayBuffer): true when the whole mapping now has writable page-table entries.
//   A ring's pages cost a fault each, on each side, the first time they are written (a 64 MiB ring: 16,384 of
//   them, several times the copy itself); a pair populates its ring once, when it first carries a payload.
//   MADV_POPULATE_WRITE (Linux 5.14) prefaults without changing a byte, so either side may call it while the
//   other writes; false where the kernel lacks it (the pages then fault in as they are first used).
static napi_value populate(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  void *data = NULL;
  size_t length = 0;
  bool is_arraybuffer = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_is_arraybuffer(env, argv[0], &is_arraybuffer) != napi_ok || !is_arraybuffer ||
      napi_get_arraybuffer_info(env, argv[0], &data, &length) != napi_ok) {
    napi_throw_type_error(env, "KD_SHM", "kd_shm: populate(ring: ArrayBuffer)");
    return NULL;
  }
  bool done = false;
#ifdef MADV_POPULATE_WRITE
  done = madvise(data, length, MADV_POPULATE_WRITE) == 0;
#endif
  napi_value result;
  napi_get_boolean(env, done, &result);
  return result;
}

// ---- doorbell ------------------------------------------------------------------------------------------

// bell(path: string, create: boolean): number, a file descriptor
//   A ring's wake-up: the receiver waits on the read end in its event loop (no thread, no core spent waiting);
//   the sender writes a byte after each block it publishes. create: a new FIFO (mode 0600), opened for reading
//   and writing (so it never reads end-of-file while no sender has it open); else an existing FIFO of this
//   user's, opened for writing. Both non-blocking and close-on-exec; the caller closes the descriptor.
static napi_value bell(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  char path[4096];
  size_t path_length = 0;
  bool create = false;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_length) != napi_ok ||
      napi_get_value_bool(env, argv[1], &create) != napi_ok) {
    napi_throw_type_error(env, "KD_SHM", "kd_shm: bell(path: string, create: boolean)");
    return NULL;
  }
  if (create && mkfifo(path, 0600) != 0) {
    throw_errno(env, "cannot create", path);
    return NULL;
  }
  const int fd = open(path, (create ? O_RDWR : O_WRONLY) | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, "cannot open", path);
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode) || st.st_uid != geteuid()) {
    close(fd);
    char message[512];
    snprintf(message, sizeof message, "kd_shm: %s is not a doorbell owned by this user", path);
    napi_throw_error(env, "KD_SHM", message);
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

// ring(fd: number): false when the receiver is gone (its end closed)
//   A full pipe (EAGAIN) means the receiver has 64 KiB of rings it has not read yet: it is awake already.
//   Node ignores SIGPIPE, so a closed reader is EPIPE here, not a signal; the dead peer is the watchdog's.
static napi_value ring(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "KD_SHM", "kd_shm: ring(fd: number)");
    return NULL;
  }
  static const char byte = 1;
  ssize_t written;
  do written = write(fd, &byte, 1);
  while (written < 0 && errno == EINTR);
  napi_value result;
  napi_get_boolean(env, written == 1 || errno == EAGAIN, &result);
  return result;
}

// ---- fp32 reductions --------------------------------------------------------------------------------------

typedef enum { SUM = 0, MAX = 1, MIN = 2 } Op;

// `left + right` as V8 computes the JS loops' `acc[i] += x[i]` on x86-64: when both are NaN, IEEE 754 leaves
// open whose payload the sum keeps and compilers may swap the operands, so the right one's is picked
// explicitly (quieted, by right + right), as kd_half's add_js does.
static inline float add_js(float left, float right) { return right != right ? right + right : left + right; }

// acc[i] = op(acc[i], x[i]); NaN wins for max and min, as in reduce-op.ts (`acc + x` is then NaN).
static void reduce(Op op, float *restrict acc, const float *restrict x, size_t n) {
  switch (op) {
    case SUM:
      for (size_t i = 0; i < n; i++) acc[i] = add_js(acc[i], x[i]);
      return;
    case MAX:
      for (size_t i = 0; i < n; i++) {
        const float a = acc[i], b = x[i];
        acc[i] = a >= b ? a : (b > a ? b : add_js(a, b));
      }
      return;
    case MIN:
      for (size_t i = 0; i < n; i++) {
        const float a = acc[i], b = x[i];
        acc[i] = a <= b ? a : (b < a ? b : add_js(a, b));
      }
      return;
  }
}

// dst[i] = ((wire[i] + x[i]) rounded to fp32) / divisor, each step rounded to fp32, as the JS fp32 codec;
// dst is wire, x or an array of its own (so no restrict on it). With `copy`, the same values go
// there too, in the same pass: the owner's sum lands in its buffer and in the next rank's ring at once.
static void add_divide(float *dst, const float *wire, const float *x, float divisor, float *copy, size_t n) {
  if (copy != NULL) {
    for (size_t i = 0; i < n; i++) {
      const float v = divisor == 1.0f ? add_js(wire[i], x[i]) : add_js(wire[i], x[i]) / divisor;
      dst[i] = v;
      copy[i] = v;
    }
  } else if (divisor == 1.0f) {
    for (size_t i = 0; i < n; i++) dst[i] = add_js(wire[i], x[i]);
  } else {
    for (size_t i = 0; i < n; i++) dst[i] = add_js(wire[i], x[i]) / divisor;
  }
}

static bool float32s(napi_env env, napi_value value, float **data, size_t *length) {
  bool is_typed_array = false;
  napi_typedarray_type type;
  void *raw = NULL;
  if (napi_is_typedarray(env, value, &is_typed_array) != napi_ok || !is_typed_array ||
      napi_get_typedarray_info(env, value, &type, length, &raw, NULL, NULL) != napi_ok ||
      type != napi_float32_array) {
    napi_throw_type_error(env, "KD_SHM", "kd_shm: expected a Float32Array");
    return false;
  }
  *data = raw;
  return true;
}

// reduce(op: 0 sum | 1 max | 2 min, acc: Float32Array, x: Float32Array)   acc[i] = op(acc[i], x[i])
// addDivide(wire: Float32Array, x: Float32Array, divisor: number)          wire[i] = (wire[i] + x[i]) / divisor
// addDivideInto(wire: Float32Array, x: Float32Array, divisor: number, copy?: Float32Array)
//                                                                          x[i] (= copy[i]) = (wire[i] + x[i]) / divisor
// addDivideTo(wire: Float32Array, x: Float32Array, divisor: number, dst: Float32Array)
//                                                                          dst[i] = (wire[i] + x[i]) / divisor
// Lengths must be equal: a bad call throws instead of reading or writing past an array.
static napi_value call(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &data) != napi_ok) return NULL;
  const int tag = data == NULL ? 0 : *(const int *)data;
  const bool divide = tag != 0;
  if (argc < 3) {
    napi_throw_type_error(env, "KD_SHM", "kd_shm: missing arguments");
    return NULL;
  }
  float *a = NULL, *x = NULL;
  size_t na = 0, nx = 0;
  double number = 0;
  if (napi_get_value_double(env, argv[divide ? 2 : 0], &number) != napi_ok) {
    napi_throw_type_error(env, "KD_SHM", "kd_shm: expected a number");
    return NULL;
  }
  if (!float32s(env, argv[divide ? 0 : 1], &a, &na) || !float32s(env, argv[divide ? 1 : 2], &x, &nx)) return NULL;
  if (na != nx) {
    napi_throw_range_error(env, "KD_SHM", "kd_shm: the arrays differ in length");
    return NULL;
  }
  float *extra = NULL; // addDivideInto's copy, addDivideTo's destination
  size_t nextra = 0;
  if (tag >= 2) {
    napi_valuetype type = napi_undefined;
    if (argc > 3 && napi_typeof(env, argv[3], &type) != napi_ok) return NULL;
    if (type != napi_undefined || tag == 3) {
      if (!float32s(env, argv[3], &extra, &nextra)) return NULL;
      if (nextra != na) {
        napi_throw_range_error(env, "KD_SHM", "kd_shm: the arrays differ in length");
        return NULL;
      }
    }
  }
  if (divide) {
    if (tag == 3) add_divide(extra, a, x, (float)number, NULL, na);
    else add_divide(tag == 2 ? x : a, a, x, (float)number, extra, na);
  } else {
    if (!(number == SUM || number == MAX || number == MIN)) {
      napi_throw_range_error(env, "KD_SHM", "kd_shm: op is 0 (sum), 1 (max) or 2 (min)");
      return NULL;
    }
    reduce((Op)number, a, x, na);
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  static const int divide_tag = 1, divide_into_tag = 2, divide_to_tag = 3;
  const napi_property_descriptor functions[] = {
      {"map", NULL, map, NULL, NULL, NULL, napi_enumerable, NULL},
      {"populate", NULL, populate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"bell", NULL, bell, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ring", NULL, ring, NULL, NULL, NULL, napi_enumerable, NULL},
      {"reduce", NULL, call, NULL, NULL, NULL, napi_enumerable, NULL},
      {"addDivide", NULL, call, NULL, NULL, NULL, napi_enumerable, (void *)&divide_tag},
      {"addDivideInto", NULL, call, NULL, NULL, NULL, napi_enumerable, (void *)&divide_into_tag},
      {"addDivideTo", NULL, call, NULL, NULL, NULL, napi_enumerable, (void *)&divide_to_tag},
  };
  if (napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions) != napi_ok) {
    napi_throw_error(env, "KD_SHM", "kd_shm: could not build the module's exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
