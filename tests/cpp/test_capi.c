/* The C API from C (this file is compiled as C11, proving the header is plain C): loading both
 * formats, predictions equal to Python's, and every argument and plan error path.
 * Usage: test_capi FIXTURES_DIR (written by make_fixtures.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastckpt/fastckpt.h"

#ifndef FASTCKPT_EXPECTED_VERSION
#error "FASTCKPT_EXPECTED_VERSION must be defined (tests/cpp/CMakeLists.txt)"
#endif

static int failures = 0;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
      ++failures;                                                               \
    }                                                                           \
  } while (0)

/* A call must fail with `want` and a message containing `needle`. */
#define EXPECT_ERR(call, want, needle)                                                              \
  do {                                                                                              \
    fckpt_status s_ = (call);                                                                       \
    if (s_ != (want) || !strstr(fckpt_last_error(), (needle))) {                                    \
      fprintf(stderr, "%s:%d: %s -> %d '%s', expected %d with '%s'\n", __FILE__, __LINE__, #call,   \
              (int)s_, fckpt_last_error(), (int)(want), (needle));                                  \
      ++failures;                                                                                   \
    }                                                                                               \
  } while (0)

static char dir[4096];
static const char* path(const char* name) {
  static char buf[8192];
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

static float* read_f32(const char* name, long n) {
  FILE* f = fopen(path(name), "rb");
  float* v = malloc(sizeof(float) * (size_t)n);
  if (!f || !v || fread(v, sizeof(float), (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "cannot read %s\n", path(name));
    exit(2);
  }
  fclose(f);
  return v;
}

static double max_diff(const float* a, const float* b, long n) {
  double m = 0;
  for (long i = 0; i < n; ++i) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= m)) m = d; /* NaN counts as a difference */
  }
  return m;
}

enum { ROWS = 100, NIN = 784, NOUT = 10 };

static void test_load_and_predict(void) {
  fckpt_model_params p = fckpt_model_default_params();
  CHECK(p.use_mmap && !p.verify_all && p.batch_size == 32);
  float* x = read_f32("x.f32", (long)ROWS * NIN);
  float* y32 = read_f32("y32.f32", (long)ROWS * NOUT);
  float* yall = read_f32("yall.f32", (long)ROWS * NOUT);
  float* out = calloc(ROWS * NOUT, sizeof(float));

  fckpt_model* m = NULL;
  CHECK(fckpt_model_load_dir(path("model"), p, &m) == FCKPT_OK);
  CHECK(strcmp(fckpt_last_error(), "") == 0);
  CHECK(fckpt_model_n_inputs(m) == NIN && fckpt_model_n_outputs(m) == NOUT);
  int64_t mapped = -1, copied = -1;
  CHECK(fckpt_model_weight_bytes(m, &mapped, &copied) == FCKPT_OK);
  CHECK(mapped == 4 * (784 * 512 + 512 + 512 * 10 + 10) && copied == 0); /* zero-copy */
  CHECK(fckpt_model_predict(m, x, ROWS, NIN, out, ROWS * NOUT) == FCKPT_OK);
  printf("model dir, batch_size 32 vs model.predict(x): max |diff| = %g\n", max_diff(out, y32, ROWS * NOUT));
  CHECK(max_diff(out, y32, ROWS * NOUT) <= 1e-6);
  CHECK(fckpt_model_predict(m, x, 0, NIN, NULL, 0) == FCKPT_OK); /* empty batch */

  /* Argument errors: the model stays usable after each. */
  EXPECT_ERR(fckpt_model_predict(m, x, ROWS, NIN - 1, out, ROWS * NOUT), FCKPT_ERR_INVALID_ARGUMENT, "expected 784 columns");
  EXPECT_ERR(fckpt_model_predict(m, x, -1, NIN, out, ROWS * NOUT), FCKPT_ERR_INVALID_ARGUMENT, "rows >= 0");
  EXPECT_ERR(fckpt_model_predict(NULL, x, ROWS, NIN, out, ROWS * NOUT), FCKPT_ERR_INVALID_ARGUMENT, "model is NULL");
  EXPECT_ERR(fckpt_model_predict(m, NULL, ROWS, NIN, out, ROWS * NOUT), FCKPT_ERR_INVALID_ARGUMENT, "x is NULL");
  EXPECT_ERR(fckpt_model_predict(m, x, ROWS, NIN, NULL, ROWS * NOUT), FCKPT_ERR_INVALID_ARGUMENT, "out is NULL");
  EXPECT_ERR(fckpt_model_predict(m, x, ROWS, NIN, out, ROWS * NOUT - 1), FCKPT_ERR_BUFFER_TOO_SMALL, "1000 needed");
  EXPECT_ERR(fckpt_model_predict(m, x, 2, NIN, x + 100, 2 * NOUT), FCKPT_ERR_INVALID_ARGUMENT, "overlap");
  EXPECT_ERR(fckpt_model_predict(m, x, INT64_MAX / 2, NIN, out, INT64_MAX), FCKPT_ERR_INVALID_ARGUMENT, "too large");
  EXPECT_ERR(fckpt_model_weight_bytes(NULL, &mapped, &copied), FCKPT_ERR_INVALID_ARGUMENT, "NULL");
  CHECK(fckpt_model_n_inputs(NULL) == -1 && fckpt_model_n_outputs(NULL) == -1);
  CHECK(fckpt_model_predict(m, x, ROWS, NIN, out, ROWS * NOUT) == FCKPT_OK);
  CHECK(strcmp(fckpt_last_error(), "") == 0);
  fckpt_model_free(m);
  fckpt_model_free(NULL);

  /* save_weights checkpoint, whole batch in one pass = model.predict(x, batch_size=rows). */
  p.batch_size = 0;
  m = NULL;
  CHECK(fckpt_model_load_checkpoint(path("weights/cp.ckpt"), NULL, p, &m) == FCKPT_OK);
  memset(out, 0, sizeof(float) * ROWS * NOUT);
  CHECK(m && fckpt_model_predict(m, x, ROWS, NIN, out, ROWS * NOUT) == FCKPT_OK);
  printf("checkpoint, batch_size 0 vs model.predict(x, batch_size=%d): max |diff| = %g\n", ROWS,
         max_diff(out, yall, ROWS * NOUT));
  CHECK(max_diff(out, yall, ROWS * NOUT) <= 1e-6);
  fckpt_model_free(m);
  free(x), free(y32), free(yall), free(out);
}

static void test_load_errors(void) {
  fckpt_model_params p = fckpt_model_default_params();
  fckpt_model* m = (fckpt_model*)&p; /* must be reset to NULL on failure */
  EXPECT_ERR(fckpt_model_load_dir(NULL, p, &m), FCKPT_ERR_INVALID_ARGUMENT, "dir is NULL");
  CHECK(m == NULL);
  EXPECT_ERR(fckpt_model_load_dir(path("model"), p, NULL), FCKPT_ERR_INVALID_ARGUMENT, "out_model is NULL");
  EXPECT_ERR(fckpt_model_load_checkpoint(NULL, NULL, p, &m), FCKPT_ERR_INVALID_ARGUMENT, "prefix");
  EXPECT_ERR(fckpt_model_load_checkpoint(path("weights/cp.ckpt"), NULL, p, NULL), FCKPT_ERR_INVALID_ARGUMENT, "out_model");
  EXPECT_ERR(fckpt_model_load_dir(path("no_such_dir"), p, &m), FCKPT_ERR_NOT_FOUND, "no model directory");
  EXPECT_ERR(fckpt_model_load_dir(path("weights"), p, &m), FCKPT_ERR_NOT_FOUND, "fastckpt_model.json");
  EXPECT_ERR(fckpt_model_load_checkpoint(path("weights/nope"), NULL, p, &m), FCKPT_ERR_NOT_FOUND, "nope.index");
  EXPECT_ERR(fckpt_model_load_dir(path("custom"), p, &m), FCKPT_ERR_PLAN, "custom Python layer");
  /* One data block listed 1000 times by the index block: refused once, before any re-reading. */
  EXPECT_ERR(fckpt_model_load_checkpoint(path("hostile/dup"), "fastckpt-plan 1\ninput 1\n", p, &m),
             FCKPT_ERR_CORRUPT, "duplicate block handles");
  CHECK(strstr(fckpt_last_error(), "dup.index") != NULL);
  CHECK(m == NULL);
  p.batch_size = -1;
  EXPECT_ERR(fckpt_model_load_dir(path("model"), p, &m), FCKPT_ERR_INVALID_ARGUMENT, "batch_size");
  CHECK(m == NULL);
}

static void test_bad_plans(void) {
  static const char* K0 = "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE";
  static const char* B0 = "layer_with_weights-0/bias/.ATTRIBUTES/VARIABLE_VALUE";
  static const char* K1 = "layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE";
  static const char* B1 = "layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE";
  char plan[4096];
  fckpt_model_params p = fckpt_model_default_params();
  fckpt_model* m = NULL;
  const char* prefix = path("weights/cp.ckpt");
  char pre[8192];
  snprintf(pre, sizeof pre, "%s", prefix);

  /* A good plan passed explicitly works, and overrides the stored one. */
  snprintf(plan, sizeof plan, "fastckpt-plan 1\r\ninput 784\n\n# hidden\ndense 512 relu %s %s\ndense 10 softmax %s %s", K0, B0, K1, B1);
  CHECK(fckpt_model_load_checkpoint(pre, plan, p, &m) == FCKPT_OK);
  fckpt_model_free(m);

  /* The same weights as a version 2 plan with two outputs: the hidden layer and the head. */
  {
    static char plan2[4096];
    snprintf(plan2, sizeof plan2,
             "fastckpt-plan 2\ninput pixels 784 float\nnode h dense pixels 512 relu %s %s\n"
             "node d identity h\nnode y dense d 10 softmax %s %s\noutput probs y\noutput hidden h\n", K0, B0, K1, B1);
    CHECK(fckpt_model_load_checkpoint(pre, plan2, p, &m) == FCKPT_OK);
    CHECK(fckpt_model_n_named_inputs(m) == 1 && fckpt_model_n_named_outputs(m) == 2);
    CHECK(strcmp(fckpt_model_input_name(m, 0), "pixels") == 0 && fckpt_model_input_width(m, 0) == 784);
    CHECK(fckpt_model_input_is_int(m, 0) == 0 && fckpt_model_input_is_int(m, 1) == -1);
    CHECK(strcmp(fckpt_model_output_name(m, 1), "hidden") == 0 && fckpt_model_output_width(m, 1) == 512);
    CHECK(fckpt_model_output_name(m, 2) == NULL && fckpt_model_output_width(m, -1) == -1);
    CHECK(fckpt_model_input_name(NULL, 0) == NULL && fckpt_model_n_named_outputs(NULL) == -1);
    static float x[2 * 784], probs[2 * 10], hidden[2 * 512];
    for (int i = 0; i < 2 * 784; ++i) x[i] = (float)(i % 7) / 7.0f;
    const void* ins[1] = {x};
    float* outs[2] = {probs, hidden};
    int64_t caps[2] = {20, 1024};
    CHECK(fckpt_model_predict_multi(m, ins, 2, outs, caps) == FCKPT_OK);
    float sum = 0;
    for (int j = 0; j < 10; ++j) sum += probs[j];
    CHECK(fabsf(sum - 1.0f) < 1e-5f);
    caps[1] = 1023;
    EXPECT_ERR(fckpt_model_predict_multi(m, ins, 2, outs, caps), FCKPT_ERR_BUFFER_TOO_SMALL, "output 1 ('hidden') holds 1023 floats");
    caps[1] = 1024;
    outs[1] = x;
    EXPECT_ERR(fckpt_model_predict_multi(m, ins, 2, outs, caps), FCKPT_ERR_INVALID_ARGUMENT, "overlaps input 0");
    outs[1] = probs;
    EXPECT_ERR(fckpt_model_predict_multi(m, ins, 2, outs, caps), FCKPT_ERR_INVALID_ARGUMENT, "('hidden') overlaps");
    outs[1] = NULL;
    EXPECT_ERR(fckpt_model_predict_multi(m, ins, 2, outs, caps), FCKPT_ERR_INVALID_ARGUMENT, "output 1 ('hidden') is NULL");
    EXPECT_ERR(fckpt_model_predict_multi(m, NULL, 2, outs, caps), FCKPT_ERR_INVALID_ARGUMENT, "is NULL");
    EXPECT_ERR(fckpt_model_predict_multi(m, ins, -1, outs, caps), FCKPT_ERR_INVALID_ARGUMENT, "rows >= 0");
    CHECK(fckpt_model_predict_multi(m, NULL, 0, NULL, NULL) == FCKPT_OK);
    EXPECT_ERR(fckpt_model_predict(m, x, 1, 784, probs, 10), FCKPT_ERR_INVALID_ARGUMENT, "use fckpt_model_predict_multi");
    fckpt_model_free(m);
    m = NULL;
  }

  struct { const char* body; fckpt_status want; const char* needle; } cases[] = {
      {"", FCKPT_ERR_PLAN, "empty plan"},
      {"fastckpt-plan 999\ninput 784\n", FCKPT_ERR_PLAN, "newer than this runtime"},
      /* version 2 */
      {"fastckpt-plan 2\ninput 784\n", FCKPT_ERR_PLAN, "line 2: expected 'input <name> <width> float|int'"},
      {"fastckpt-plan 2\ninput x 784 double\n", FCKPT_ERR_PLAN, "'float' or 'int'"},
      {"fastckpt-plan 2\ninput x 784 float\n", FCKPT_ERR_PLAN, "no 'output"},
      {"fastckpt-plan 2\ninput x 784 float\ninput x 3 int\n", FCKPT_ERR_PLAN, "line 3: tensor 'x' is defined twice"},
      {"fastckpt-plan 2\ninput a,b 784 float\n", FCKPT_ERR_PLAN, "holds a comma"},
      {"fastckpt-plan 2\nnode y identity x\n", FCKPT_ERR_PLAN, "before any 'input'"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y identity z\n", FCKPT_ERR_PLAN, "line 3: input 'z' is not defined on an earlier line"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y identity y\n", FCKPT_ERR_PLAN, "input 'y' is not defined"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y identity x,\n", FCKPT_ERR_PLAN, "empty input name"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y conv2d x\n", FCKPT_ERR_PLAN, "unknown op 'conv2d'"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y add x\n", FCKPT_ERR_PLAN, "takes 2 to 256 inputs, got 1"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y subtract x,x,x\n", FCKPT_ERR_PLAN, "takes 2 inputs, got 3"},
      {"fastckpt-plan 2\ninput x 784 float\ninput i 3 int\nnode y add x,i\n", FCKPT_ERR_PLAN, "only 'embedding' reads those"},
      {"fastckpt-plan 2\ninput x 784 float\ninput v 3 float\nnode y maximum x,v\n", FCKPT_ERR_PLAN, "merge inputs differ in width"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y embedding x 10 2 k\n", FCKPT_ERR_PLAN, "input 'x' is float"},
      {"fastckpt-plan 2\ninput i 16777216 int\nnode y embedding i 10 2 k\n", FCKPT_ERR_PLAN, "exceeds 16777216"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y gap1d x 5\n", FCKPT_ERR_PLAN, "not a multiple of 5 steps"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y rescaling x nan 0\n", FCKPT_ERR_PLAN, "finite decimal"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y rescaling x 1e39 0\n", FCKPT_ERR_PLAN, "fit a float32"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y relu x 0 - 0x1\n", FCKPT_ERR_PLAN, "the threshold as a finite decimal"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y normalize x 1e-07 2 m v\n", FCKPT_ERR_PLAN, "invert as 0 or 1"},
      {"fastckpt-plan 2\ninput x 784 float\ninput i 3 int\nnode y gap1d x,i 4\n", FCKPT_ERR_PLAN, "must be int ids of width 4"},
      {"fastckpt-plan 2\ninput x 784 float\ninput v 4 float\nnode y gap1d x,v 4\n", FCKPT_ERR_PLAN, "must be int ids of width 4"},
      {"fastckpt-plan 2\ninput i 8 int\nnode y gap1d i 4\n", FCKPT_ERR_PLAN, "only 'embedding' reads those"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y prelu x -\n", FCKPT_ERR_PLAN, "alpha key is required"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y batchnorm x 0.001 - - m\n", FCKPT_ERR_PLAN, "got 8 tokens"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y identity x\noutput o y\nnode z identity y\n", FCKPT_ERR_PLAN, "line 5: a 'node' line after an 'output' line"},
      {"fastckpt-plan 2\ninput x 784 float\noutput o y\n", FCKPT_ERR_PLAN, "output tensor 'y' is not defined"},
      {"fastckpt-plan 2\ninput x 784 float\ninput i 2 int\noutput o i\n", FCKPT_ERR_PLAN, "outputs are float"},
      {"fastckpt-plan 2\ninput x 784 float\noutput o x\noutput o x\n", FCKPT_ERR_PLAN, "named twice"},
      {"fastckpt-plan 2\ninput x 784 float\nnode y embedding i 10 2 k\n", FCKPT_ERR_PLAN, "'i' is not defined"},
      {"fastckpt-plan 2\ninput i 4 int\nnode y embedding i 10 2 missing\noutput o y\n", FCKPT_ERR_MISMATCH, "'missing' is not in checkpoint"},
      {"fastckpt-plan x\n", FCKPT_ERR_PLAN, "positive plan version"},
      {"keras-plan 1\n", FCKPT_ERR_PLAN, "line 1: expected 'fastckpt-plan"},
      {"fastckpt-plan 1\n", FCKPT_ERR_PLAN, "no 'input"},
      {"fastckpt-plan 1\ninput 0\n", FCKPT_ERR_PLAN, "input width"},
      {"fastckpt-plan 1\ninput 0784\n", FCKPT_ERR_PLAN, "input width"},
      {"fastckpt-plan 1\ninput 99999999999999999999\n", FCKPT_ERR_PLAN, "input width"},
      {"fastckpt-plan 1\ninput 16777217\n", FCKPT_ERR_PLAN, "input width"},
      {"fastckpt-plan 1\ninput  784\n", FCKPT_ERR_PLAN, "single spaces"},
      {"fastckpt-plan 1\ninput 784\ninput 784\n", FCKPT_ERR_PLAN, "second 'input'"},
      {"fastckpt-plan 1\ninput 784\nconv2d 3 3\n", FCKPT_ERR_PLAN, "unknown layer 'conv2d'"},
      {"fastckpt-plan 1\ninput 784\ndense 10 gelu_erf a b\n", FCKPT_ERR_PLAN, "unknown activation 'gelu_erf'"},
      {"fastckpt-plan 1\ninput 784\ndense 10 relu a\n", FCKPT_ERR_PLAN, "got 4 tokens"},
      {"fastckpt-plan 1\ninput 784\ndropout 1.0\n", FCKPT_ERR_PLAN, "dropout rate"},
      {"fastckpt-plan 1\ninput 784\ndropout nan\n", FCKPT_ERR_PLAN, "dropout rate"},
      {"fastckpt-plan 1\ninput 784\ndense 10 relu k\x01y b\n", FCKPT_ERR_PLAN, "'k\\x01y'"},
      {"fastckpt-plan 1\ninput 784\ndense 10 linear missing/key -\n", FCKPT_ERR_MISMATCH, "'missing/key' is not in checkpoint"},
      {"fastckpt-plan 1\ninput 784\ndense 10 linear optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE -\n", FCKPT_ERR_MISMATCH, "float32"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
    EXPECT_ERR(fckpt_model_load_checkpoint(pre, cases[i].body, p, &m), cases[i].want, cases[i].needle);

  /* Shapes that disagree with the checkpoint. */
  snprintf(plan, sizeof plan, "fastckpt-plan 1\ninput 783\ndense 512 relu %s %s\n", K0, B0);
  EXPECT_ERR(fckpt_model_load_checkpoint(pre, plan, p, &m), FCKPT_ERR_MISMATCH, "expected shape (783, 512), got (784, 512)");
  snprintf(plan, sizeof plan, "fastckpt-plan 1\ninput 784\ndense 512 relu %s %s\n", K0, B1);
  EXPECT_ERR(fckpt_model_load_checkpoint(pre, plan, p, &m), FCKPT_ERR_MISMATCH, "expected shape (512,), got (10,)");
  snprintf(plan, sizeof plan, "fastckpt-plan 1\ninput 784\ndense 512 relu %s %s\ndense 10 linear %s %s\n", K0, B0, K0, B1);
  EXPECT_ERR(fckpt_model_load_checkpoint(pre, plan, p, &m), FCKPT_ERR_MISMATCH, "line 4");

  /* Version 2 limits: inputs, inputs to one node, floats per row. */
  {
    char* v2 = malloc(1 << 20);
    size_t k = (size_t)snprintf(v2, 64, "fastckpt-plan 2\n");
    for (int i = 0; i < 257; ++i) k += (size_t)snprintf(v2 + k, 64, "input x%d 1 float\n", i);
    EXPECT_ERR(fckpt_model_load_checkpoint(pre, v2, p, &m), FCKPT_ERR_PLAN, "more than 256 inputs");
    k = (size_t)snprintf(v2, 64, "fastckpt-plan 2\ninput x 1 float\nnode y concat x");
    for (int i = 0; i < 256; ++i) k += (size_t)snprintf(v2 + k, 64, ",x");
    snprintf(v2 + k, 64, "\n");
    EXPECT_ERR(fckpt_model_load_checkpoint(pre, v2, p, &m), FCKPT_ERR_PLAN, "more than 256 inputs to one node");
    k = (size_t)snprintf(v2, 64, "fastckpt-plan 2\ninput x 16777216 float\n");
    for (int i = 0; i < 5; ++i) k += (size_t)snprintf(v2 + k, 64, "node y%d softmax x\n", i);
    EXPECT_ERR(fckpt_model_load_checkpoint(pre, v2, p, &m), FCKPT_ERR_PLAN, "line 7: the nodes' outputs exceed");
    free(v2);
  }

  /* Limits: an over-long line, and more layers than allowed. */
  char* big = malloc(1 << 21);
  memset(big, 'a', 1 << 21);
  memcpy(big, "fastckpt-plan 1\ninput 784\ndense 1 relu ", 39);
  big[(1 << 21) - 1] = 0;
  EXPECT_ERR(fckpt_model_load_checkpoint(pre, big, p, &m), FCKPT_ERR_PLAN, "exceeds the limit");
  big[8000] = 0;
  EXPECT_ERR(fckpt_model_load_checkpoint(pre, big, p, &m), FCKPT_ERR_PLAN, "line 3: longer than 4096");
  size_t n = (size_t)snprintf(big, 64, "fastckpt-plan 1\ninput 784\n");
  for (int i = 0; i < 4097; ++i) n += (size_t)snprintf(big + n, 64, "dropout 0.5\n");
  EXPECT_ERR(fckpt_model_load_checkpoint(pre, big, p, &m), FCKPT_ERR_PLAN, "more than 4096 layers");
  free(big);
  CHECK(m == NULL);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
    return 2;
  }
  snprintf(dir, sizeof dir, "%s", argv[1]);
  printf("libfastckpt %s\n", fckpt_version());
  /* The library's version is the package's (fastckpt/version.py, read by tests/cpp/CMakeLists.txt). */
  CHECK(strcmp(fckpt_version(), FASTCKPT_EXPECTED_VERSION) == 0);
  CHECK(strcmp(fckpt_status_string(FCKPT_ERR_CORRUPT), "corrupt checkpoint") == 0);
  CHECK(strcmp(fckpt_status_string((fckpt_status)1234), "unknown status") == 0);
  test_load_and_predict();
  test_load_errors();
  test_bad_plans();
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("all C API checks passed\n");
  return failures ? 1 : 0;
}
