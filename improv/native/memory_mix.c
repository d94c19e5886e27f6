/* improv._memory_mix: the session memory's prediction and its blend with the step model, in C.
 *
 * They run for every token the player plays, between the model's step and the sampler. In Python
 * they are dict lookups on Python-int context keys, a loop over each heard context's
 * continuations and a dozen numpy calls on (V,) vectors: tens of microseconds, doubled by the
 * cache misses the ONNX step leaves behind (docs/LISTENING.md). Here each is one pass over plain
 * buffers. The tables stay the Python dicts improv/memory.py keeps (read here, never written), and
 * every value is computed as the Python code computes it, in the same order, so both paths give
 * the same numbers but for the last bits of a few sums (numpy's are pairwise) and of exp and log.
 * Built by setup.py, optional: without it improv/memory.py and improv/blend.py use their Python.
 *
 *   witten_bell(p, unigram, total, types, scale, table, ctx, order) -> depth   Counts.predict
 *   intervals(p, p_abs, p_rel, relative_ids)                    SessionMemory.predict's two halves
 *   blend(out, logits, p_memory, model_weight, floor_p)                     Blend.mix (weight < 1)
 *
 * Arrays are numpy's: 1-d, C-contiguous, float64, the logits float32 or float64, the relative ids int64.
 */
#define PY_SSIZE_T_CLEAN
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <Python.h>
#include <numpy/arrayobject.h>
#include <math.h>

/* `obj` as a 1-d, C-contiguous, native-order numpy array of `type` (writable if asked): its data,
 * and its length in *n; else NULL and a TypeError. (Read through the numpy C API: a field each,
 * where the buffer protocol would build and compare a format string per array and call.) */
static void *array(PyObject *obj, int type, int writable, Py_ssize_t *n)
{
    PyArrayObject *a = (PyArrayObject *)obj;
    if (!PyArray_Check(obj) || PyArray_NDIM(a) != 1 || PyArray_TYPE(a) != type || !PyArray_IS_C_CONTIGUOUS(a) ||
            !PyArray_ISNOTSWAPPED(a) || (writable && !PyArray_ISWRITEABLE(a))) {
        PyErr_Format(PyExc_TypeError, "improv._memory_mix: expected a 1-d%s array of %s",
                     writable ? " writable" : "", type == NPY_FLOAT32 ? "float32" : type == NPY_INT64 ? "int64" : "float64");
        return NULL;
    }
    *n = PyArray_DIM(a, 0);
    return PyArray_DATA(a);
}

static int check_args(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, expected, nargs);
    return -1;
}

/* Counts._key with Python ints: key = k, then key = key * base + id + 1 for each of the last k ids. */
static PyObject *context_key_long(PyObject *ctx, Py_ssize_t k, unsigned long long base)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ctx);
    PyObject *key = PyLong_FromSsize_t(k), *b = PyLong_FromUnsignedLongLong(base), *one = PyLong_FromLong(1);
    if (b == NULL || one == NULL)
        Py_CLEAR(key);
    for (Py_ssize_t i = n - k; i < n && key; i++) {
        PyObject *times = PyNumber_Multiply(key, b);
        PyObject *plus = times ? PyNumber_Add(times, PySequence_Fast_GET_ITEM(ctx, i)) : NULL;
        Py_DECREF(key);
        key = plus ? PyNumber_Add(plus, one) : NULL;
        Py_XDECREF(times);
        Py_XDECREF(plus);
    }
    Py_XDECREF(b);
    Py_XDECREF(one);
    return key;
}

/* The same in 64 bits, handed to Python ints where it would not fit (the longest contexts of a large table). */
static PyObject *context_key(PyObject *ctx, Py_ssize_t k, unsigned long long base)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ctx);
    unsigned long long key = (unsigned long long)k;
    for (Py_ssize_t i = n - k; i < n; i++) {
        long long id = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(ctx, i));
        if (id == -1 && PyErr_Occurred())
            return NULL;
        if (id < 0 || __builtin_mul_overflow(key, base, &key) ||
                __builtin_add_overflow(key, (unsigned long long)id + 1, &key))
            return context_key_long(ctx, k, base);
    }
    return PyLong_FromUnsignedLongLong(key);
}

struct level {
    PyObject *counts; /* {id: count}, borrowed from the table */
    double total, weight;
};

/* The heard contexts ending `ctx`, shortest first, up to the first that was not (Counts._heard):
 * their number, or -1 with an exception. */
static Py_ssize_t heard(struct level *levels, PyObject *table, PyObject *ctx, Py_ssize_t most, Py_ssize_t size)
{
    for (Py_ssize_t k = 1; k <= most; k++) {
        PyObject *key = context_key(ctx, k, (unsigned long long)size + 1);
        if (key == NULL)
            return -1;
        PyObject *entry = PyDict_GetItemWithError(table, key);
        Py_DECREF(key);
        if (entry == NULL)
            return PyErr_Occurred() ? -1 : k - 1;
        if (!PyList_Check(entry) || PyList_GET_SIZE(entry) != 2 || !PyDict_Check(PyList_GET_ITEM(entry, 1))) {
            PyErr_SetString(PyExc_TypeError, "a memory table's entry is not [total, {id: count}]");
            return -1;
        }
        levels[k - 1].total = PyFloat_AsDouble(PyList_GET_ITEM(entry, 0));
        levels[k - 1].counts = PyList_GET_ITEM(entry, 1);
        if (levels[k - 1].total == -1.0 && PyErr_Occurred())
            return -1;
    }
    return most;
}

/* p[id] += count x weight for each continuation, in the dict's order; 0, or -1 with an exception. */
static int add_counts(double *p, Py_ssize_t size, PyObject *counts, double weight)
{
    Py_ssize_t pos = 0;
    PyObject *id, *count;
    while (PyDict_Next(counts, &pos, &id, &count)) {
        Py_ssize_t t = PyLong_AsSsize_t(id);
        double c = PyFloat_AsDouble(count);
        if ((t == -1 || c == -1.0) && PyErr_Occurred())
            return -1;
        if (t < 0 || t >= size) {
            PyErr_Format(PyExc_IndexError, "continuation %zd outside the table's %zd ids", t, size);
            return -1;
        }
        p[t] += c * weight;
    }
    return 0;
}

/* Counts.predict: Witten-Bell from the longest heard context down, the levels' factors multiplied
 * out first, so the dense part is written once and each level adds only its own counts. */
static long predict(double *p, const double *unigram, Py_ssize_t size, double total, double types, double scale,
                    PyObject *table, PyObject *ctx, Py_ssize_t order)
{
    if (total <= 0.0) {
        for (Py_ssize_t i = 0; i < size; i++)
            p[i] = 1.0 / size;
        return 0;
    }
    Py_ssize_t most = Py_MAX(Py_MIN(PySequence_Fast_GET_SIZE(ctx), order - 1), 0);
    struct level on_stack[16], *levels = on_stack;
    if (most > 16 && (levels = PyMem_Malloc(most * sizeof *levels)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    long depth = -1;
    Py_ssize_t n = heard(levels, table, ctx, most, size);
    if (n < 0)
        goto done;
    double w = 1.0;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        double escape = (double)PyDict_GET_SIZE(levels[i].counts) * scale;
        levels[i].weight = w / (levels[i].total + escape);
        w *= escape / (levels[i].total + escape);
    }
    double escape = types * scale, norm = w / (total + escape), flat = escape * norm / (double)size;
    for (Py_ssize_t i = 0; i < size; i++)
        p[i] = unigram[i] * norm + flat;
    for (Py_ssize_t i = n - 1; i >= 0; i--)
        if (add_counts(p, size, levels[i].counts, levels[i].weight) < 0)
            goto done;
    depth = n ? (long)n + 1 : 1;
done:
    if (levels != on_stack)
        PyMem_Free(levels);
    return depth;
}

static PyObject *witten_bell(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("witten_bell", nargs, 8) < 0)
        return NULL;
    double total = PyFloat_AsDouble(args[2]), types = PyFloat_AsDouble(args[3]), scale = PyFloat_AsDouble(args[4]);
    Py_ssize_t order = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyDict_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "witten_bell() takes the table as a dict");
        return NULL;
    }
    Py_ssize_t size, unigram_size;
    double *p = array(args[0], NPY_FLOAT64, 1, &size);
    const double *unigram = p ? array(args[1], NPY_FLOAT64, 0, &unigram_size) : NULL;
    if (unigram == NULL)
        return NULL;
    if (unigram_size != size) {
        PyErr_SetString(PyExc_ValueError, "witten_bell(): p and unigram differ in length");
        return NULL;
    }
    PyObject *ctx = PySequence_Fast(args[6], "witten_bell() takes the context as a sequence");
    if (ctx == NULL)
        return NULL;
    long depth = predict(p, unigram, size, total, types, scale, args[5], ctx, order);
    Py_DECREF(ctx);
    return depth < 0 ? NULL : PyLong_FromLong(depth);
}

/* SessionMemory.predict's mix: p = p_abs / 2 + p_rel[relative_ids] / (2 x its sum). */
static PyObject *intervals(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("intervals", nargs, 4) < 0)
        return NULL;
    Py_ssize_t n, n_abs, m, n_ids;
    double *p = array(args[0], NPY_FLOAT64, 1, &n);
    const double *p_abs = p ? array(args[1], NPY_FLOAT64, 0, &n_abs) : NULL;
    const double *p_rel = p_abs ? array(args[2], NPY_FLOAT64, 0, &m) : NULL;
    const npy_int64 *ids = p_rel ? array(args[3], NPY_INT64, 0, &n_ids) : NULL;
    if (ids == NULL)
        return NULL;
    if (n_abs != n || n_ids != n) {
        PyErr_SetString(PyExc_ValueError, "intervals(): p, p_abs and relative_ids differ in length");
        return NULL;
    }
    double sum = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m) {
            PyErr_Format(PyExc_IndexError, "relative id %lld outside the interval table's %zd", (long long)ids[i], m);
            return NULL;
        }
        sum += p_rel[ids[i]];
    }
    double half = 0.5 / sum;
    for (Py_ssize_t i = 0; i < n; i++)
        p[i] = p_abs[i] * 0.5 + p_rel[ids[i]] * half;
    Py_RETURN_NONE;
}

/* Blend.mix: out = log(max(w softmax(logits) + (1 - w) p_memory, floor_p)). The logits' maximum is
 * taken off in their own precision (numpy does that for float32, then exp in float64). */
static PyObject *blend(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("blend", nargs, 5) < 0)
        return NULL;
    double w = PyFloat_AsDouble(args[3]), floor_p = PyFloat_AsDouble(args[4]);
    if (PyErr_Occurred())
        return NULL;
    int single = PyArray_Check(args[1]) && PyArray_TYPE((PyArrayObject *)args[1]) == NPY_FLOAT32;
    Py_ssize_t n, n_logits, n_memory;
    double *e = array(args[0], NPY_FLOAT64, 1, &n);
    const void *logits = e ? array(args[1], single ? NPY_FLOAT32 : NPY_FLOAT64, 0, &n_logits) : NULL;
    const double *p_memory = logits ? array(args[2], NPY_FLOAT64, 0, &n_memory) : NULL;
    if (p_memory == NULL)
        return NULL;
    if (n_logits != n || n_memory != n) {
        PyErr_SetString(PyExc_ValueError, "blend(): out, logits and p_memory differ in length");
        return NULL;
    }
    double sum = 0.0;
    if (single) {
        const float *x = logits;
        float top = n ? x[0] : 0.0f;
        for (Py_ssize_t i = 1; i < n; i++)
            if (x[i] > top || isnan(x[i]))
                top = x[i];
        for (Py_ssize_t i = 0; i < n; i++)
            sum += e[i] = exp((double)(float)(x[i] - top));
    } else {
        const double *x = logits;
        double top = n ? x[0] : 0.0;
        for (Py_ssize_t i = 1; i < n; i++)
            if (x[i] > top || isnan(x[i]))
                top = x[i];
        for (Py_ssize_t i = 0; i < n; i++)
            sum += e[i] = exp(x[i] - top);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double q = e[i] / sum;
        q *= w;
        q += (1.0 - w) * p_memory[i];
        e[i] = log(q < floor_p ? floor_p : q);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"witten_bell", (PyCFunction)(void (*)(void))witten_bell, METH_FASTCALL,
     "witten_bell(p, unigram, total, types, scale, table, ctx, order) -> depth: Counts.predict into p"},
    {"intervals", (PyCFunction)(void (*)(void))intervals, METH_FASTCALL,
     "intervals(p, p_abs, p_rel, relative_ids): p = p_abs / 2 + p_rel[relative_ids] normalised / 2"},
    {"blend", (PyCFunction)(void (*)(void))blend, METH_FASTCALL,
     "blend(out, logits, p_memory, model_weight, floor_p): Blend.mix's log-probabilities into out"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "improv._memory_mix",
    "The session memory's prediction and its blend with the step model (improv/native/memory_mix.c).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__memory_mix(void)
{
    import_array();
    return PyModule_Create(&module);
}
