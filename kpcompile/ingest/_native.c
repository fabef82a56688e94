/* kpcompile.ingest._native: a folder walk and a page-cache read in C, without the GIL.
 *
 * walk(root, prefix, chain, names, max_depth) lists the folder root/prefix and
 * the folders under it, max_depth levels deep, and returns
 *
 *     (folders, files, frontier, keys)
 *
 * folders   list of the relative folder paths (bytes, ending with "/", "" for the
 *           root) that hold a named file;
 * files     list of (folder index, name, size, mtime_ns) of every entry whose name
 *           is one of `names` (size -1 when it is not a regular file, and size -1,
 *           mtime 0 when it cannot be stat'ed);
 * frontier  list of (relative path, chain) of the folders max_depth levels down,
 *           not listed: the caller walks them next (so threads can share a tree);
 * keys      bytes: (st_dev, st_ino) as two uint64 of every folder listed.
 *
 * It follows symbolic links to folders as the serial walk (kpcompile.ingest.folder)
 * does: a folder whose (dev, ino) is one of its ancestors' (`chain`, packed like
 * `keys`) is a loop and is skipped. A folder reached twice by other paths is not
 * detected here: the caller sees it as a repeated key. It returns None instead of
 * a result when any folder cannot be stat'ed, opened or read: the caller then walks
 * serially, which names the error as it always has. Nothing here follows the
 * order of the entries, so the result is the same whatever order readdir gives.
 *
 * The GIL is released for the whole walk; results are kept in C buffers and turned
 * into Python objects at the end.
 *
 * read_cached(path, max_bytes) returns a regular file's bytes when they are in the
 * page cache (preadv2 with RWF_NOWAIT reads them without waiting on the device), and
 * None otherwise: nothing cached, not a regular file, larger than max_bytes, any
 * error. A read cut short at a page marked for read-ahead is finished with pread
 * (the device answers); one refused at its first page is taken when mincore says
 * every page is in memory. The bytes are read straight into the bytes object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int buf_put(Buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL) return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

typedef struct {
    int32_t folder;
    int32_t name_len;
    size_t name_at;
    int64_t size, mtime;
} File;

typedef struct {
    size_t path_at, path_len, chain_at, chain_len;
} Todo;

typedef struct {
    /* inputs */
    const char *const *names;
    const size_t *name_lens;
    Py_ssize_t n_names;
    /* the current full path, and where its relative part starts */
    Buf path;
    size_t rel_at;
    /* the ancestors' keys of the folder being listed */
    Buf chain;
    /* outputs */
    Buf folders;    /* concatenated relative folder paths */
    Buf folder_end; /* size_t per folder: end offset in folders */
    Buf names_buf;  /* concatenated file names */
    Buf files;      /* File */
    Buf todo_paths, todo_chains, todo; /* Todo */
    Buf keys;
    int failed; /* 1: give up (serial walk); 2: out of memory */
} Walk;

static int named(Walk *w, const char *name, size_t len) {
    for (Py_ssize_t i = 0; i < w->n_names; i++)
        if (w->name_lens[i] == len && memcmp(w->names[i], name, len) == 0) return 1;
    return 0;
}

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000LL + (int64_t)st->st_mtim.tv_nsec;
}

/* One entry of a folder, read before the folder is closed. */
typedef struct {
    size_t name_at, name_len;
} Sub;


static int chain_has(const Buf *chain, uint64_t dev, uint64_t ino) {
    const uint64_t *k = (const uint64_t *)chain->data;
    size_t n = chain->len / (2 * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        if (k[2 * i] == dev && k[2 * i + 1] == ino) return 1;
    return 0;
}

#define FAIL(code)          \
    do {                    \
        w->failed = (code); \
        goto done;          \
    } while (0)

struct dirent64_linux {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Whether an entry is a folder, following links (as os.DirEntry.is_dir does). */
static int is_folder(int fd, const char *name, unsigned char type) {
    if (type == DT_DIR) return 1;
    if (type != DT_LNK && type != DT_UNKNOWN) return 0;
    struct stat st;
    return fstatat(fd, name, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

/* Record a named file of the folder being listed. */
static int add_file(Walk *w, int fd, const char *name, size_t len, int32_t *folder) {
    if (*folder < 0) {
        size_t rel_len = w->path.len - 1 - w->rel_at; /* without the NUL */
        if (buf_put(&w->folders, w->path.data + w->rel_at, rel_len)) return -1;
        size_t end = w->folders.len;
        if (buf_put(&w->folder_end, &end, sizeof end)) return -1;
        *folder = (int32_t)(w->folder_end.len / sizeof(size_t) - 1);
    }
    File f = {0};
    f.folder = *folder;
    f.name_at = w->names_buf.len;
    f.name_len = (int32_t)len;
    if (buf_put(&w->names_buf, name, len)) return -1;
    struct stat st;
    if (fstatat(fd, name, &st, 0) == 0) {
        f.size = S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
        f.mtime = mtime_ns(&st);
    } else {
        f.size = -1;
        f.mtime = 0;
    }
    return buf_put(&w->files, &f, sizeof f);
}

/* List the folder `name` (relative to the open folder `at`, or a full path with
 * AT_FDCWD), whose relative path is in w->path (NUL-terminated, ending with "/"
 * or empty), then the folders under it, `depth` levels in all. */
static void walk_folder(Walk *w, int at, const char *name, int depth) {
    Buf subs = {0}, subnames = {0};
    struct stat st;
    int32_t folder = -1;
    char entries[1 << 15];
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) FAIL(1);
    uint64_t key[2] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino};
    if (chain_has(&w->chain, key[0], key[1])) goto done; /* a loop: skipped */
    if (buf_put(&w->keys, key, sizeof key)) FAIL(2);
    for (;;) {
        long got = syscall(SYS_getdents64, fd, entries, sizeof entries);
        if (got < 0) FAIL(1);
        if (got == 0) break;
        for (long at_ = 0; at_ < got;) {
            const struct dirent64_linux *e = (const struct dirent64_linux *)(entries + at_);
            at_ += e->d_reclen;
            const char *n = e->d_name;
            if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
            size_t len = strlen(n);
            if (named(w, n, len)) {
                if (add_file(w, fd, n, len, &folder)) FAIL(2);
            } else if (is_folder(fd, n, e->d_type)) {
                Sub s = {subnames.len, len};
                if (buf_put(&subnames, n, len + 1) || buf_put(&subs, &s, sizeof s)) FAIL(2);
            }
        }
    }
    size_t path_len = w->path.len - 1; /* the NUL */
    size_t chain_len = w->chain.len;
    if (buf_put(&w->chain, key, sizeof key)) FAIL(2);
    size_t n = subs.len / sizeof(Sub);
    for (size_t i = 0; i < n && !w->failed; i++) {
        const Sub *s = (const Sub *)subs.data + i;
        const char *sub = subnames.data + s->name_at;
        w->path.len = path_len;
        if (buf_put(&w->path, sub, s->name_len) || buf_put(&w->path, "/", 2)) FAIL(2);
        if (depth <= 1) { /* not listed here: the caller's next call lists it */
            Todo t = {w->todo_paths.len, w->path.len - 1 - w->rel_at, w->todo_chains.len,
                      w->chain.len};
            if (buf_put(&w->todo_paths, w->path.data + w->rel_at, t.path_len) ||
                buf_put(&w->todo_chains, w->chain.data, w->chain.len) ||
                buf_put(&w->todo, &t, sizeof t))
                FAIL(2);
        } else {
            walk_folder(w, fd, sub, depth - 1);
        }
    }
    w->path.len = path_len + 1;
    w->path.data[path_len] = 0;
    w->chain.len = chain_len;
done:
    if (fd >= 0) close(fd);
    free(subs.data);
    free(subnames.data);
}

static void walk_free(Walk *w) {
    Buf *bufs[] = {&w->path,       &w->chain, &w->folders,    &w->folder_end,  &w->names_buf,
                   &w->files,      &w->todo,  &w->todo_paths, &w->todo_chains, &w->keys};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]->data);
}

static PyObject *result(Walk *w) {
    PyObject *folders = NULL, *files = NULL, *todo = NULL, *keys = NULL;
    size_t nf = w->folder_end.len / sizeof(size_t);
    const size_t *ends = (const size_t *)w->folder_end.data;
    if (!(folders = PyList_New((Py_ssize_t)nf))) goto fail;
    for (size_t i = 0, at = 0; i < nf; at = ends[i], i++) {
        PyObject *b = PyBytes_FromStringAndSize(w->folders.data + at, (Py_ssize_t)(ends[i] - at));
        if (!b) goto fail;
        PyList_SET_ITEM(folders, (Py_ssize_t)i, b);
    }
    size_t n = w->files.len / sizeof(File);
    if (!(files = PyList_New((Py_ssize_t)n))) goto fail;
    for (size_t i = 0; i < n; i++) {
        const File *f = (const File *)w->files.data + i;
        PyObject *t = Py_BuildValue("(iy#LL)", f->folder, w->names_buf.data + f->name_at,
                                    (Py_ssize_t)f->name_len, (long long)f->size,
                                    (long long)f->mtime);
        if (!t) goto fail;
        PyList_SET_ITEM(files, (Py_ssize_t)i, t);
    }
    size_t nt = w->todo.len / sizeof(Todo);
    if (!(todo = PyList_New((Py_ssize_t)nt))) goto fail;
    for (size_t i = 0; i < nt; i++) {
        const Todo *t = (const Todo *)w->todo.data + i;
        PyObject *item = Py_BuildValue(
            "(y#y#)", w->todo_paths.data + t->path_at, (Py_ssize_t)t->path_len,
            w->todo_chains.data + t->chain_at, (Py_ssize_t)t->chain_len);
        if (!item) goto fail;
        PyList_SET_ITEM(todo, (Py_ssize_t)i, item);
    }
    if (!(keys = PyBytes_FromStringAndSize(w->keys.data, (Py_ssize_t)w->keys.len))) goto fail;
    return Py_BuildValue("(NNNN)", folders, files, todo, keys);
fail:
    Py_XDECREF(folders);
    Py_XDECREF(files);
    Py_XDECREF(todo);
    Py_XDECREF(keys);
    return NULL;
}

static PyObject *walk(PyObject *self, PyObject *args) {
    const char *root, *prefix, *chain;
    Py_ssize_t root_len, prefix_len, chain_len;
    PyObject *names;
    int max_depth;
    if (!PyArg_ParseTuple(args, "y#y#y#O!i", &root, &root_len, &prefix, &prefix_len, &chain,
                          &chain_len, &PyTuple_Type, &names, &max_depth))
        return NULL;
    if (chain_len % (2 * sizeof(uint64_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "chain: a whole number of (dev, ino) pairs");
        return NULL;
    }
    Py_ssize_t n_names = PyTuple_GET_SIZE(names);
    const char **name_ptrs = PyMem_Calloc((size_t)n_names + 1, sizeof(char *));
    size_t *name_lens = PyMem_Calloc((size_t)n_names + 1, sizeof(size_t));
    if (!name_ptrs || !name_lens) {
        PyMem_Free(name_ptrs);
        PyMem_Free(name_lens);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n_names; i++) {
        PyObject *item = PyTuple_GET_ITEM(names, i);
        if (!PyBytes_Check(item)) {
            PyMem_Free(name_ptrs);
            PyMem_Free(name_lens);
            PyErr_SetString(PyExc_TypeError, "names: a tuple of bytes");
            return NULL;
        }
        name_ptrs[i] = PyBytes_AS_STRING(item); /* kept alive by `names` */
        name_lens[i] = (size_t)PyBytes_GET_SIZE(item);
    }
    Walk w = {0};
    w.names = name_ptrs;
    w.name_lens = name_lens;
    w.n_names = n_names;
    int ok = !buf_put(&w.path, root, (size_t)root_len) && !buf_put(&w.path, "/", 1);
    w.rel_at = w.path.len;
    ok = ok && !buf_put(&w.path, prefix, (size_t)prefix_len) && !buf_put(&w.path, "", 1) &&
         !(chain_len && buf_put(&w.chain, chain, (size_t)chain_len));
    if (!ok) w.failed = 2;
    Py_BEGIN_ALLOW_THREADS
    if (!w.failed) walk_folder(&w, AT_FDCWD, w.path.data, max_depth < 1 ? 1 : max_depth);
    Py_END_ALLOW_THREADS
    PyObject *out;
    if (w.failed == 2) {
        out = PyErr_NoMemory();
    } else if (w.failed) {
        Py_INCREF(Py_None);
        out = Py_None;
    } else {
        out = result(&w);
    }
    walk_free(&w);
    PyMem_Free(name_ptrs);
    PyMem_Free(name_lens);
    return out;
}

/* Whether every page of the file is in the page cache (mincore over a mapping).
 * RWF_NOWAIT also says EAGAIN for a file in memory whose first page is marked
 * for read-ahead (seen on a few percent of the files of a warm tree). */
static int resident(int fd, size_t size) {
    if (size == 0) return 1;
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return 0;
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (size + (size_t)page - 1) / (size_t)page;
    unsigned char small[256];
    unsigned char *vec = pages <= sizeof small ? small : malloc(pages);
    int all = 0;
    if (vec != NULL && mincore(map, size, vec) == 0) {
        all = 1;
        for (size_t i = 0; i < pages && all; i++) all = vec[i] & 1;
    }
    if (vec != small) free(vec);
    munmap(map, size);
    return all;
}

static PyObject *read_cached(PyObject *self, PyObject *args) {
    const char *path;
    long long max_bytes;
    if (!PyArg_ParseTuple(args, "yL", &path, &max_bytes)) return NULL;
    int fd;
    struct stat st;
    Py_BEGIN_ALLOW_THREADS
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0 && fstat(fd, &st) != 0) {
        close(fd);
        fd = -1;
    }
    Py_END_ALLOW_THREADS
    if (fd < 0) Py_RETURN_NONE;
    if (!S_ISREG(st.st_mode) || (long long)st.st_size > max_bytes) {
        close(fd);
        Py_RETURN_NONE;
    }
    Py_ssize_t size = (Py_ssize_t)st.st_size;
    /* one byte more than the size: a file that grew is not taken here */
    PyObject *out = PyBytes_FromStringAndSize(NULL, size + 1);
    if (out == NULL) {
        close(fd);
        return NULL;
    }
    char *buf = PyBytes_AS_STRING(out);
    Py_ssize_t got;
    Py_BEGIN_ALLOW_THREADS
    struct iovec iov = {buf, (size_t)size + 1};
    got = preadv2(fd, &iov, 1, 0, RWF_NOWAIT);
    if (got < 0 && errno == EAGAIN && resident(fd, (size_t)size)) got = 0;
    while (got >= 0 && got < size) {
        ssize_t more = pread(fd, buf + got, (size_t)(size + 1 - got), got);
        if (more <= 0) break;
        got += more;
    }
    close(fd);
    Py_END_ALLOW_THREADS
    if (got != size) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&out, size) != 0) return NULL;
    return out;
}

static PyMethodDef methods[] = {
    {"read_cached", read_cached, METH_VARARGS,
     "read_cached(path, max_bytes) -> bytes of a file in the page cache, or None"},
    {"walk", walk, METH_VARARGS,
     "walk(root, prefix, chain, names, max_depth) -> (folders, files, frontier, keys) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "A folder walk and a page-cache read in C, without the GIL.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
