/* kpcompile.parsing._scan: a keypoint file's bytes straight into columns.
 *
 * scan(data) reads one file of a known layout (face.dense / face.standard objects,
 * or the legacy coordinate maps) and returns (layout, version, buffer, absent):
 * buffer holds x3, y3, z3, px, py (468 float64 each), then 468 visible bytes and
 * 468 missing bytes; absent is the number of landmarks without is_visible (-1:
 * the legacy layout without an is_visible map). It returns None for anything it
 * does not recognise exactly, and the Python parsers decide (kpcompile/parsing/
 * fast.py, then parse.py, which names the reason). So this scanner decides
 * nothing on its own: it accepts exactly the files the msgspec fast path accepts,
 * with the same values, or defers.
 *
 * - No Python object per landmark; the GIL is released while scanning.
 * - No recursion: the documents have a fixed shape, walked by fixed code; every
 *   read is bounds-checked against the buffer's end (no NUL terminator assumed).
 * - Numbers: the JSON grammar checked here; integers (no '.', no exponent) as
 *   int -> float (so "-0" is +0.0, as msgspec and orjson give); other numbers
 *   correctly rounded: Clinger's exact case (at most 2**53 and |exponent| <= 22:
 *   one IEEE operation), else the Eisel-Lemire algorithm (the 128-bit powers of
 *   ten come from Python's exact integers at import, see fast.py), else glibc's
 *   strtod_l in the "C" locale (correctly rounded too, slower; for the few cases
 *   Eisel-Lemire cannot decide, such as exact binary fractions). More than 19
 *   significant digits, a result out of range (ERANGE) or any |value| >= 2**53
 *   defers.
 * - Strings: keys must be exactly the expected ASCII names (any escape, control
 *   or non-ASCII byte defers), no key twice, no unknown key, no null.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <locale.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define K 468
#define POW_MIN (-348)
#define POW_MAX 347
#define NPOW (POW_MAX - POW_MIN + 1)
#define MAX_EXACT 9007199254740992.0 /* 2**53 */
#define MAX_VERSIONS 8
#define MAX_VERSION_LEN 32

static uint64_t pow_hi[NPOW], pow_lo[NPOW];
static int configured = 0;
static char versions[MAX_VERSIONS][MAX_VERSION_LEN];
static size_t version_lens[MAX_VERSIONS];
static int n_versions = 0;
static PyObject *layout_names[4]; /* faces, in_cabin, documented, legacy */
static locale_t c_locale;
static const double exact_powers[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                        1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                        1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

enum { FACES, IN_CABIN, DOCUMENTED, LEGACY };

typedef struct {
    const unsigned char *p, *end;
} Cur;

typedef struct {
    double *cols;         /* 5 * K */
    unsigned char *vis;   /* K */
    unsigned char *miss;  /* K */
    int layout;
    const unsigned char *version;
    size_t version_len;
    int absent;
} Out;

/* ------------------------------------------------------------------ numbers */

static int eisel_lemire(uint64_t man, int exp10, int neg, double *out) {
    if (exp10 < POW_MIN || exp10 > POW_MAX) return 0;
    int clz = __builtin_clzll(man);
    man <<= clz;
    /* floor(exp10 * log2(10)) + 64 + bias - clz; >> of a negative is arithmetic in gcc */
    uint64_t ret_exp2 = (uint64_t)(((int64_t)217706 * exp10 >> 16) + 64 + 1023) - (uint64_t)clz;
    int i = exp10 - POW_MIN;
    __uint128_t x = (__uint128_t)man * pow_hi[i];
    uint64_t x_hi = (uint64_t)(x >> 64), x_lo = (uint64_t)x;
    if ((x_hi & 0x1FF) == 0x1FF && x_lo + man < man) {
        __uint128_t y = (__uint128_t)man * pow_lo[i];
        uint64_t y_hi = (uint64_t)(y >> 64), y_lo = (uint64_t)y;
        uint64_t merged_hi = x_hi, merged_lo = x_lo + y_hi;
        if (merged_lo < x_lo) merged_hi++;
        if ((merged_hi & 0x1FF) == 0x1FF && merged_lo + 1 == 0 && y_lo + man < man) return 0;
        x_hi = merged_hi;
        x_lo = merged_lo;
    }
    uint64_t msb = x_hi >> 63;
    uint64_t mant = x_hi >> (msb + 9);
    ret_exp2 -= 1 ^ msb;
    if (x_lo == 0 && (x_hi & 0x1FF) == 0 && (mant & 3) == 1) return 0; /* half-way */
    mant += mant & 1;
    mant >>= 1;
    if (mant >> 53) {
        mant >>= 1;
        ret_exp2 += 1;
    }
    if (ret_exp2 - 1 >= 0x7FF - 1) return 0; /* subnormal, zero or beyond */
    uint64_t bits = ret_exp2 << 52 | (mant & 0x000FFFFFFFFFFFFFULL);
    if (neg) bits |= 0x8000000000000000ULL;
    memcpy(out, &bits, sizeof bits);
    return 1;
}

static inline int isdig(unsigned char c) { return c >= '0' && c <= '9'; }

/* Eight ASCII digits at once (fast_float's SWAR; little-endian, as x86-64 and arm64). */
static inline int eight_digits(uint64_t v) {
    return !(((v + 0x4646464646464646ULL) | (v - 0x3030303030303030ULL)) & 0x8080808080808080ULL);
}

static inline uint64_t eight_value(uint64_t v) {
    const uint64_t mask = 0x000000FF000000FFULL;
    const uint64_t mul1 = 0x000F424000000064ULL; /* 100 + (1000000 << 32) */
    const uint64_t mul2 = 0x0000271000000001ULL; /* 1 + (10000 << 32) */
    v -= 0x3030303030303030ULL;
    v = (v * 10) + (v >> 8);
    return (((v & mask) * mul1) + (((v >> 16) & mask) * mul2)) >> 32;
}

/* The number spelled by [start, stop) (checked JSON) with strtod_l; 0 to defer. */
static int slow_number(const unsigned char *start, const unsigned char *stop, double *out) {
    char text[64];
    size_t n = (size_t)(stop - start);
    if (n >= sizeof text) return 0;
    memcpy(text, start, n);
    text[n] = 0;
    char *rest;
    errno = 0;
    double v = strtod_l(text, &rest, c_locale);
    if (errno != 0 || rest != text + n) return 0;
    *out = v;
    return 1;
}

/* One JSON number at c->p; 0 to defer. */
static int number(Cur *c, double *out) {
    const unsigned char *p = c->p, *end = c->end, *start = c->p;
    int neg = 0, digits = 0, exp10 = 0, integer = 1;
    uint64_t man = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end) return 0;
    if (*p == '0') {
        p++;
        if (p < end && isdig(*p)) return 0; /* a leading zero: not JSON */
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && isdig(*p)) {
            if (digits == 19) return 0;
            man = man * 10 + (uint64_t)(*p - '0');
            digits++;
            p++;
        }
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        integer = 0;
        p++;
        const unsigned char *first = p;
        while (p < end && isdig(*p)) {
            uint64_t word;
            if (man != 0 && digits <= 11 && end - p >= 8 &&
                (memcpy(&word, p, 8), eight_digits(word))) {
                man = man * 100000000ULL + eight_value(word);
                digits += 8;
                exp10 -= 8;
                p += 8;
                continue;
            }
            if (man == 0 && *p == '0') { /* zeros before the first significant digit */
                exp10--;
            } else {
                if (digits == 19) return 0;
                man = man * 10 + (uint64_t)(*p - '0');
                digits++;
                exp10--;
            }
            p++;
        }
        if (p == first) return 0;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integer = 0;
        p++;
        int eneg = 0, e = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        const unsigned char *first = p;
        while (p < end && isdig(*p)) {
            if (e < 100000) e = e * 10 + (*p - '0');
            p++;
        }
        if (p == first) return 0;
        exp10 += eneg ? -e : e;
    }
    c->p = p;
    double v;
    if (integer) {
        if (man >= (1ULL << 53)) return 0;
        v = man == 0 ? 0.0 : (neg ? -(double)man : (double)man); /* int -0 is 0 */
    } else if (man == 0) {
        v = neg ? -0.0 : 0.0;
    } else if (man <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        v = exp10 < 0 ? (double)man / exact_powers[-exp10] : (double)man * exact_powers[exp10];
        if (neg) v = -v;
    } else if (!eisel_lemire(man, exp10, neg, &v) && !slow_number(start, p, &v)) {
        return 0;
    }
    if (!(v < MAX_EXACT && v > -MAX_EXACT)) return 0;
    *out = v;
    return 1;
}

/* ------------------------------------------------------------------ structure */

static inline void ws(Cur *c) {
    const unsigned char *p = c->p, *end = c->end;
    if (p < end && *p == '\n') { /* indented files: a newline, then a run of spaces */
        p++;
        uint64_t word;
        while (end - p >= 8 && (memcpy(&word, p, 8), word == 0x2020202020202020ULL)) p += 8;
    }
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    c->p = p;
}

static inline int eat(Cur *c, unsigned char ch) {
    ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A plain string (no escape, ASCII printable); its bytes in *s, *n. */
static int plain_string(Cur *c, const unsigned char **s, size_t *n) {
    if (!eat(c, '"')) return 0;
    const unsigned char *p = c->p, *end = c->end, *start = p;
    while (p < end && *p != '"') {
        if (*p == '\\' || *p < 0x20 || *p >= 0x80) return 0;
        p++;
    }
    if (p >= end) return 0;
    *s = start;
    *n = (size_t)(p - start);
    c->p = p + 1;
    return 1;
}

/* A key and its colon. */
static int key(Cur *c, const unsigned char **s, size_t *n) {
    return plain_string(c, s, n) && eat(c, ':');
}

static inline int is(const unsigned char *s, size_t n, const char *name) {
    return n == strlen(name) && memcmp(s, name, n) == 0;
}

/* After a member: 1 for ',' (another follows), 2 for the closing ch, 0 to defer. */
static inline int next(Cur *c, unsigned char close) {
    ws(c);
    if (c->p >= c->end) return 0;
    if (*c->p == ',') {
        c->p++;
        return 1;
    }
    if (*c->p == close) {
        c->p++;
        return 2;
    }
    return 0;
}

/* {"x": n, "y": n[, "z": n]} in any order, each once: values into dst[0..dims). */
static int point(Cur *c, double *dst[3], int dims) {
    if (!eat(c, '{')) return 0;
    int seen = 0;
    for (;;) {
        const unsigned char *s;
        size_t n;
        if (!key(c, &s, &n) || n != 1) return 0;
        int axis = s[0] == 'x' ? 0 : s[0] == 'y' ? 1 : (s[0] == 'z' && dims == 3) ? 2 : -1;
        if (axis < 0 || seen & (1 << axis)) return 0;
        seen |= 1 << axis;
        ws(c);
        if (!number(c, dst[axis])) return 0;
        int r = next(c, '}');
        if (r == 0) return 0;
        if (r == 2) break;
    }
    return seen == (1 << dims) - 1;
}

/* A landmark id key: "0".."467", no leading zero. */
static int landmark_id(const unsigned char *s, size_t n) {
    if (n == 0 || n > 3 || (n > 1 && s[0] == '0')) return -1;
    int id = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdig(s[i])) return -1;
        id = id * 10 + (s[i] - '0');
    }
    return id < K ? id : -1;
}

/* One landmark object: global_3d, pixel_2d, optional is_visible, any order. */
static int landmark(Cur *c, Out *o, int id) {
    if (!eat(c, '{')) return 0;
    int seen = 0;
    double *g[3] = {&o->cols[id], &o->cols[K + id], &o->cols[2 * K + id]};
    double *px[3] = {&o->cols[3 * K + id], &o->cols[4 * K + id], NULL};
    o->vis[id] = 0;
    o->miss[id] = 1;
    for (;;) {
        const unsigned char *s;
        size_t n;
        if (!key(c, &s, &n)) return 0;
        if (is(s, n, "global_3d")) {
            if (seen & 1 || !point(c, g, 3)) return 0;
            seen |= 1;
        } else if (is(s, n, "pixel_2d")) {
            if (seen & 2 || !point(c, px, 2)) return 0;
            seen |= 2;
        } else if (is(s, n, "is_visible")) {
            if (seen & 4) return 0;
            seen |= 4;
            ws(c);
            const unsigned char *p = c->p;
            size_t left = (size_t)(c->end - p);
            if (left >= 6 && memcmp(p, "\"true\"", 6) == 0) {
                o->vis[id] = 1;
                c->p += 6;
            } else if (left >= 7 && memcmp(p, "\"false\"", 7) == 0) {
                c->p += 7;
            } else if (left >= 4 && memcmp(p, "true", 4) == 0) {
                o->vis[id] = 1;
                c->p += 4;
            } else if (left >= 5 && memcmp(p, "false", 5) == 0) {
                c->p += 5;
            } else {
                return 0; /* null, another string, ...: the Python parsers decide */
            }
            o->miss[id] = 0;
        } else {
            return 0;
        }
        int r = next(c, '}');
        if (r == 0) return 0;
        if (r == 2) break;
    }
    if ((seen & 3) != 3) return 0;
    if (!(seen & 4)) o->absent++;
    return 1;
}

/* {"<id>": landmark, ...} with every id 0..467 exactly once. */
static int landmarks(Cur *c, Out *o) {
    unsigned char seen[K];
    memset(seen, 0, sizeof seen);
    int count = 0;
    if (!eat(c, '{')) return 0;
    for (;;) {
        const unsigned char *s;
        size_t n;
        if (!key(c, &s, &n)) return 0;
        int id = landmark_id(s, n);
        if (id < 0 || seen[id]) return 0;
        seen[id] = 1;
        count++;
        if (!landmark(c, o, id)) return 0;
        int r = next(c, '}');
        if (r == 0) return 0;
        if (r == 2) break;
    }
    return count == K;
}

/* The version string: kept (as bytes) only if it is a supported one. */
static int version(Cur *c, Out *o) {
    const unsigned char *s;
    size_t n;
    ws(c);
    if (o->version != NULL || !plain_string(c, &s, &n)) return 0;
    for (int i = 0; i < n_versions; i++) {
        if (n == version_lens[i] && memcmp(s, versions[i], n) == 0) {
            o->version = s;
            o->version_len = n;
            return 1;
        }
    }
    return 0;
}

static int object_layout(Cur *c, Out *o) {
    int face = 0, kind = -1;
    if (!eat(c, '{')) return 0;
    for (;;) {
        const unsigned char *s;
        size_t n;
        if (!key(c, &s, &n)) return 0;
        if (is(s, n, "version")) {
            if (!version(c, o)) return 0;
        } else if (is(s, n, "face")) {
            if (face) return 0;
            face = 1;
            if (!eat(c, '{')) return 0;
            for (;;) {
                if (!key(c, &s, &n)) return 0;
                if (kind >= 0) return 0; /* both dense and standard, or one twice */
                if (is(s, n, "dense")) {
                    kind = FACES;
                } else if (is(s, n, "standard")) {
                    kind = DOCUMENTED;
                } else {
                    return 0;
                }
                if (!landmarks(c, o)) return 0;
                int r = next(c, '}');
                if (r == 0) return 0;
                if (r == 2) break;
            }
        } else {
            return 0;
        }
        int r = next(c, '}');
        if (r == 0) return 0;
        if (r == 2) break;
    }
    if (!face || kind < 0) return 0;
    if (kind == DOCUMENTED && o->version == NULL) return 0;
    o->layout = kind == DOCUMENTED ? DOCUMENTED : (o->version != NULL ? FACES : IN_CABIN);
    return 1;
}

/* {"<id>": [n, n(, n)] or true/false, ...} with every id exactly once. */
static int legacy_map(Cur *c, Out *o, int which) {
    unsigned char seen[K];
    memset(seen, 0, sizeof seen);
    int count = 0;
    if (!eat(c, '{')) return 0;
    for (;;) {
        const unsigned char *s;
        size_t n;
        if (!key(c, &s, &n)) return 0;
        int id = landmark_id(s, n);
        if (id < 0 || seen[id]) return 0;
        seen[id] = 1;
        count++;
        ws(c);
        if (which == 2) { /* is_visible: JSON booleans only */
            size_t left = (size_t)(c->end - c->p);
            if (left >= 4 && memcmp(c->p, "true", 4) == 0) {
                o->vis[id] = 1;
                c->p += 4;
            } else if (left >= 5 && memcmp(c->p, "false", 5) == 0) {
                o->vis[id] = 0;
                c->p += 5;
            } else {
                return 0;
            }
        } else {
            int dims = which == 0 ? 3 : 2, base = which == 0 ? 0 : 3;
            if (!eat(c, '[')) return 0;
            for (int a = 0; a < dims; a++) {
                if (a && !eat(c, ',')) return 0;
                ws(c);
                if (!number(c, &o->cols[(base + a) * K + id])) return 0;
            }
            if (!eat(c, ']')) return 0;
        }
        int r = next(c, '}');
        if (r == 0) return 0;
        if (r == 2) break;
    }
    return count == K;
}

static int legacy_layout(Cur *c, Out *o) {
    int seen = 0;
    if (!eat(c, '{')) return 0;
    for (;;) {
        const unsigned char *s;
        size_t n;
        if (!key(c, &s, &n)) return 0;
        int which = is(s, n, "keypoints_3d_coordinates")   ? 0
                    : is(s, n, "keypoints_2d_coordinates") ? 1
                    : is(s, n, "is_visible")               ? 2
                                                           : -1;
        if (which >= 0) {
            if (seen & (1 << which) || !legacy_map(c, o, which)) return 0;
            seen |= 1 << which;
        } else if (is(s, n, "version")) {
            if (!version(c, o)) return 0;
        } else {
            return 0;
        }
        int r = next(c, '}');
        if (r == 0) return 0;
        if (r == 2) break;
    }
    if ((seen & 3) != 3) return 0;
    o->layout = LEGACY;
    o->absent = seen & 4 ? 0 : -1;
    memset(o->miss, 0, K);
    if (!(seen & 4)) memset(o->vis, 0, K);
    return 1;
}

static const char LEGACY_KEY[] = "\"keypoints_3d_coordinates\"";

static int scan_buffer(const unsigned char *data, size_t size, Out *o) {
    Cur c = {data, data + size};
    /* the fast path's choice: legacy when its first key shows in the first 256 bytes */
    size_t head = size < 256 ? size : 256;
    int legacy = memmem(data, head, LEGACY_KEY, sizeof LEGACY_KEY - 1) != NULL;
    if (!(legacy ? legacy_layout(&c, o) : object_layout(&c, o))) return 0;
    ws(&c);
    return c.p == c.end;
}

/* ------------------------------------------------------------------ Python */

static PyObject *scan(PyObject *self, PyObject *arg) {
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "kpcompile.parsing._scan is not configured");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t out_size = 5 * K * (Py_ssize_t)sizeof(double) + 2 * K;
    PyObject *buf = PyByteArray_FromStringAndSize(NULL, out_size);
    if (buf == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    char *mem = PyByteArray_AS_STRING(buf);
    Out o = {(double *)mem, (unsigned char *)mem + 5 * K * sizeof(double),
             (unsigned char *)mem + 5 * K * sizeof(double) + K, -1, NULL, 0, 0};
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = scan_buffer((const unsigned char *)view.buf, (size_t)view.len, &o);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (ok) {
        PyObject *ver = Py_None;
        Py_INCREF(ver);
        if (o.version != NULL) {
            Py_DECREF(ver);
            ver = PyUnicode_FromStringAndSize((const char *)o.version, (Py_ssize_t)o.version_len);
        }
        if (ver != NULL) result = Py_BuildValue("(ONNi)", layout_names[o.layout], ver, buf, o.absent);
        else Py_DECREF(buf);
        buf = NULL; /* stolen by "N" (or released above) */
    } else {
        result = Py_None;
        Py_INCREF(result);
    }
    Py_XDECREF(buf);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *table, *names;
    if (!PyArg_ParseTuple(args, "SO", &table, &names)) return NULL;
    if (PyBytes_GET_SIZE(table) != NPOW * 16) {
        PyErr_Format(PyExc_ValueError, "the powers of ten table must hold %d entries", NPOW);
        return NULL;
    }
    const unsigned char *t = (const unsigned char *)PyBytes_AS_STRING(table);
    for (int i = 0; i < NPOW; i++) { /* big-endian hi, lo */
        uint64_t hi = 0, lo = 0;
        for (int b = 0; b < 8; b++) hi = hi << 8 | t[16 * i + b];
        for (int b = 8; b < 16; b++) lo = lo << 8 | t[16 * i + b];
        pow_hi[i] = hi;
        pow_lo[i] = lo;
    }
    PyObject *seq = PySequence_Fast(names, "versions must be a sequence of str");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_VERSIONS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many versions");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (s == NULL || len >= MAX_VERSION_LEN) {
            Py_DECREF(seq);
            if (s != NULL) PyErr_SetString(PyExc_ValueError, "version too long");
            return NULL;
        }
        memcpy(versions[i], s, (size_t)len);
        version_lens[i] = (size_t)len;
    }
    n_versions = (int)n;
    Py_DECREF(seq);
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(data) -> (layout, version, buffer, absent) or None: see the module's source."},
    {"configure", configure, METH_VARARGS,
     "configure(powers_of_ten, versions): the 128-bit powers of ten and the versions read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kpcompile.parsing._scan",
    "A compiled scanner: a keypoint file's bytes straight into columns.", -1, methods,
};

PyMODINIT_FUNC PyInit__scan(void) {
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0) {
        PyErr_SetString(PyExc_OSError, "cannot create the C locale");
        return NULL;
    }
    const char *names[4] = {"faces", "in_cabin", "documented", "legacy"};
    for (int i = 0; i < 4; i++) {
        layout_names[i] = PyUnicode_InternFromString(names[i]);
        if (layout_names[i] == NULL) return NULL;
    }
    return PyModule_Create(&module);
}
