/* fastckpt embedding API: load a model that Python saved and run predict from C or C++, with no
 * Python and no TensorFlow.
 *
 * Loads a model directory (`model.save("my_model")`: fastckpt_model.json, whose presence alone is
 * checked, and variables/variables.*, a TensorFlow tensor bundle) or a checkpoint prefix
 * (`model.save_weights(...)`, or a TensorFlow checkpoint plus its architecture as plan text). The
 * architecture is the "inference plan" stored in the bundle (docs/format.md, "Inference plan"):
 * Sequential and Functional models of the built-in layers listed there, with any number of named
 * float or int-id inputs and outputs (fckpt_model_predict_multi); models with a layer the runtime
 * cannot run have none and fail with FCKPT_ERR_PLAN.
 *
 * Checks: everything the Python reader checks (bounds, block and tensor CRCs, limits), and the plan
 * against the checkpoint (every named tensor exists, is float32, has the implied shape).
 * Memory: 4-byte-aligned little-endian weights are used in place from a read-only mapping of the
 * shard (what fastckpt writes), others are copied once; params.use_mmap = false copies all.
 * Threads: a loaded model is immutable; fckpt_model_predict may run concurrently on one model.
 * Each call splits large products over FASTCKPT_NUM_THREADS (default: OMP_NUM_THREADS or all
 * cores) kernel threads, as Python does; callers predicting from many threads at once usually want
 * FASTCKPT_NUM_THREADS=1.
 * Errors: functions return fckpt_status (FCKPT_OK = 0) and leave a message naming the file, tensor,
 * plan line or argument at fault in fckpt_last_error() of the calling thread. No C++ exception ever
 * crosses this API.
 *
 *     fckpt_model* m = NULL;
 *     if (fckpt_model_load_dir("my_model", fckpt_model_default_params(), &m) != FCKPT_OK) {
 *         fprintf(stderr, "%s\n", fckpt_last_error());
 *         return 1;
 *     }
 *     float out[10];
 *     fckpt_model_predict(m, x, 1, fckpt_model_n_inputs(m), out, 10);
 *     fckpt_model_free(m);
 */
#ifndef FASTCKPT_FASTCKPT_H
#define FASTCKPT_FASTCKPT_H

#include <stdbool.h>
#include <stdint.h>

/* Symbols of the shared library are hidden except these. FASTCKPT_STATIC_DEFINE is for a static
 * build of the runtime (not shipped in the wheel). */
#if defined(FASTCKPT_STATIC_DEFINE)
#define FASTCKPT_API
#elif defined(_WIN32)
#if defined(FASTCKPT_BUILD)
#define FASTCKPT_API __declspec(dllexport)
#else
#define FASTCKPT_API __declspec(dllimport)
#endif
#else
#define FASTCKPT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a function's signature or a struct's layout changes. */
#define FCKPT_ABI_VERSION 1

typedef enum fckpt_status {
    FCKPT_OK = 0,
    FCKPT_ERR_INVALID_ARGUMENT = 1, /* a null pointer, wrong input width, overlapping buffers, an
                                       Embedding id out of range... */
    FCKPT_ERR_NOT_FOUND = 2,        /* missing directory, fastckpt_model.json, .index or shard */
    FCKPT_ERR_CORRUPT = 3,          /* bytes the format does not allow: bad CRC, bounds, records */
    FCKPT_ERR_PLAN = 4,             /* no plan, a malformed plan, or a layer the runtime lacks */
    FCKPT_ERR_MISMATCH = 5,         /* plan and checkpoint disagree: missing tensor, shape, dtype */
    FCKPT_ERR_IO = 6,               /* the operating system refused (permissions, EIO...) */
    FCKPT_ERR_BUFFER_TOO_SMALL = 7, /* out_cap < rows * n_outputs */
    FCKPT_ERR_NO_MEMORY = 8,
    FCKPT_ERR_INTERNAL = 9          /* a bug in fastckpt: please report it with the message */
} fckpt_status;

/* A loaded model: weights (mapped or owned) and the validated layer list. Opaque. */
typedef struct fckpt_model fckpt_model;

/* Load options. Always start from fckpt_model_default_params() so that fields added later get
 * their defaults. */
typedef struct fckpt_model_params {
    /* Map the data shards read-only and use aligned weights in place (default true). fastckpt
     * never truncates files it wrote, but a third party truncating a mapped shard raises SIGBUS, as
     * with any mmap reader. false: copy every weight at load and release the files. */
    bool use_mmap;
    /* Check the CRC of every tensor in the checkpoint, not only of those the plan uses (default
     * false; the optimizer state is then checked too, which costs a read of it). */
    bool verify_all;
    /* Keras' predict() batch size. Rows go through the layers in passes of whole batches, at
     * least 1024 rows each (the smallest multiple of batch_size >= 1024), exactly as Python's
     * model.predict(x, batch_size=...) groups them; with the default, 32, predict returns bit for bit
     * what model.predict(x) returns. 0 = the whole call in one pass. BLAS results may differ in the
     * last bits with the number of rows per product, hence the matching rule. */
    int32_t batch_size;
} fckpt_model_params;

FASTCKPT_API fckpt_model_params fckpt_model_default_params(void);

/* Loads a model directory saved by `model.save(path)`. The plan is read from the checkpoint.
 * On success *out_model owns the model (free it with fckpt_model_free); on failure *out_model is
 * set to NULL (when out_model itself is not NULL). */
FASTCKPT_API fckpt_status fckpt_model_load_dir(const char* dir, fckpt_model_params params,
                                               fckpt_model** out_model);

/* Loads a checkpoint prefix P (files P.index and P.data-*), as written by save_weights, a
 * ModelCheckpoint callback, or TensorFlow. plan: NUL-terminated plan text (docs/format.md,
 * "Inference plan"), or NULL to use the plan stored in the checkpoint. A plan given here takes
 * precedence over a stored one; it is how a TensorFlow-written checkpoint is loaded. */
FASTCKPT_API fckpt_status fckpt_model_load_checkpoint(const char* prefix, const char* plan,
                                                      fckpt_model_params params,
                                                      fckpt_model** out_model);

/* Releases the model and its mapping. NULL is accepted. No predict call may still be running on it. */
FASTCKPT_API void fckpt_model_free(fckpt_model* model);

/* Width of one row of the first input / first output (version 1 plan: the `input` line / the last
 * layer's units); -1 when model is NULL. */
FASTCKPT_API int64_t fckpt_model_n_inputs(const fckpt_model* model);
FASTCKPT_API int64_t fckpt_model_n_outputs(const fckpt_model* model);

/* Weight bytes used in place from the mapping, and bytes copied at load (misaligned tensors,
 * big-endian files, use_mmap = false). Either pointer may be NULL. */
FASTCKPT_API fckpt_status fckpt_model_weight_bytes(const fckpt_model* model, int64_t* mapped,
                                                   int64_t* copied);

/* Runs the model in inference mode (dropout off) on `rows` rows of `cols` float32 values each,
 * row-major, and writes rows * n_outputs floats to `out`.
 *   The model must have one float input and one output (else FCKPT_ERR_INVALID_ARGUMENT; see
 *   fckpt_model_predict_multi). cols must equal fckpt_model_n_inputs(model); out_cap is the capacity of `out` in floats and
 *   must be >= rows * n_outputs; x and out must not overlap. rows == 0 succeeds and writes nothing
 *   (x and out may then be NULL).
 * Thread-safe: any number of concurrent calls on one model. Non-finite inputs are not an error;
 * they give exactly what Python's model.predict gives (the same kernels), which is not always NaN:
 * a Dense layer's product spreads one NaN (or an inf meeting weights of both signs) of a row to every
 * unit of that row; then relu maps NaN to 0 (it keeps x only when x > 0), linear, sigmoid and tanh
 * keep NaN (sigmoid and tanh saturate at +-inf), and softmax makes a row holding a NaN or +inf
 * all NaN. So a NaN input row ends as NaN, or as zeros after a relu layer (which later layers then
 * treat as ordinary values). Rows do not affect each other. Check inputs first if that matters. */
FASTCKPT_API fckpt_status fckpt_model_predict(const fckpt_model* model, const float* x, int64_t rows,
                                              int64_t cols, float* out, int64_t out_cap);

/* Named inputs and outputs (plan version 2; a version 1 plan has one float input "input" and one
 * output "output"). Counts are -1 when model is NULL. For an index out of range the name
 * functions return NULL and the others -1. Names stay valid until fckpt_model_free. An int input
 * takes int32 ids (an Embedding's input); a float input float32 values. */
FASTCKPT_API int64_t fckpt_model_n_named_inputs(const fckpt_model* model);
FASTCKPT_API int64_t fckpt_model_n_named_outputs(const fckpt_model* model);
FASTCKPT_API const char* fckpt_model_input_name(const fckpt_model* model, int64_t i);
FASTCKPT_API int64_t fckpt_model_input_width(const fckpt_model* model, int64_t i);
FASTCKPT_API int fckpt_model_input_is_int(const fckpt_model* model, int64_t i);
FASTCKPT_API const char* fckpt_model_output_name(const fckpt_model* model, int64_t i);
FASTCKPT_API int64_t fckpt_model_output_width(const fckpt_model* model, int64_t i);

/* Runs a model with any number of inputs and outputs on `rows` rows.
 *   inputs[i]: rows * fckpt_model_input_width(model, i) values, row-major, int32_t for an int
 *   input, float otherwise (4-byte aligned); outputs[j]: room for out_caps[j] floats, at least
 *   rows * fckpt_model_output_width(model, j). No output may overlap an input or another output.
 *   rows == 0 succeeds and writes nothing (the arrays may then be NULL).
 * An id outside [0, vocabulary) fails with FCKPT_ERR_INVALID_ARGUMENT naming the input, row,
 * column and value (nothing is read out of bounds; outputs are then unspecified). Thread-safe as
 * fckpt_model_predict, which is this function for one float input and one output. */
FASTCKPT_API fckpt_status fckpt_model_predict_multi(const fckpt_model* model, const void* const* inputs,
                                                    int64_t rows, float* const* outputs,
                                                    const int64_t* out_caps);

/* The message explaining the status returned by this thread's most recent status-returning fckpt_*
 * call ("" after FCKPT_OK). Valid until that thread's next such call; copy it to keep it. Never
 * NULL. */
FASTCKPT_API const char* fckpt_last_error(void);

/* A fixed description of a status code ("invalid argument", ...). Never NULL. */
FASTCKPT_API const char* fckpt_status_string(fckpt_status status);

/* The fastckpt version the library was built from, e.g. "0.1.0" (same as fastckpt.__version__). */
FASTCKPT_API const char* fckpt_version(void);

#ifdef __cplusplus
}
#endif

#endif /* FASTCKPT_FASTCKPT_H */
