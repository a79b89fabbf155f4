/*
 * The compiled row decoder: full row images of one table map, read from a rows event's bytes
 * into the same Python values as the generated Python decoder in cdc/source/rowdecode.py,
 * which stays the fallback and the oracle (cdc/source/rownative.py builds the plan this runs).
 *
 * A Decoder is made once per table map from a plan: one (kind, a, b, width, obj) tuple per
 * column with every type decision already taken, so the per-row loop only reads bytes and
 * makes objects. Values the fast path does not build itself (DECIMAL digit groups out of
 * range, fractions outside a second, binary JSON) go to the Python helpers of the plan, and a
 * read past the end of the buffer hands the whole call to the Python decoder, whose slicing
 * rules (short reads, not errors) then decide what happens.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum {
    K_INT8, K_UINT8, K_INT16, K_UINT16, K_INT32, K_UINT32, K_INT64, K_UINT64,
    K_INT24, K_UINT24, K_FLOAT, K_DOUBLE,
    K_TEXT_UTF8, K_TEXT_CODEC, K_TEXT_RAW, K_BYTES, K_JSON,
    K_DECIMAL, K_DATE, K_DATETIME2, K_TIMESTAMP2, K_TIME2, K_YEAR,
    K_ENUM, K_SET, K_BIT,
    K_COUNT
};

static const int64_t FSP_SCALE[7] = {1000000, 100000, 10000, 1000, 100, 10, 1};
static const uint32_t POW10[10] = {1,      10,      100,      1000,      10000,
                                   100000, 1000000, 10000000, 100000000, 1000000000};

#define MAX_GROUPS 16

typedef struct {
    int kind;
    int a;         /* length-prefix size, fsp, ENUM/SET size, BIT bits, DECIMAL scale */
    int width;     /* the fixed byte width of the value (0: length-prefixed) */
    PyObject *obj; /* codec name, ENUM labels, SET members, DECIMAL fallback reader */
    /* DECIMAL digit groups, most significant first: bytes and digits of each. */
    int ngroups;
    unsigned char gbytes[MAX_GROUPS];
    unsigned char gdigits[MAX_GROUPS];
} Column;

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    Py_ssize_t null_bytes;
    Column *columns;
    PyObject *names;    /* tuple of str, one per column */
    PyObject *fallback; /* the Python decoder of the same table map */
    PyObject *decimal;  /* decimal.Decimal */
    PyObject *parse_json;
    PyObject *datetime2;
    PyObject *timestamp;
} Decoder;

/* Returned by decode_value for a read past the end of the buffer. */
static PyObject short_read_marker;
#define SHORT_READ (&short_read_marker)

static inline uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static inline uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static inline int64_t be_signed(const unsigned char *p, int n) {
    uint64_t v = be(p, n);
    int shift = 64 - 8 * n;
    return (int64_t)(v << shift) >> shift;
}

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* The library's fractional seconds: signed big-endian; odd precisions are divided by ten and
 * truncated (it divides as floats and truncates, which is exact at these magnitudes). */
static inline int64_t fraction(const unsigned char *p, int fsp) {
    int width = (fsp + 1) / 2;
    if (!width) return 0;
    int64_t raw = be_signed(p, width);
    if (fsp % 2) raw = raw / 10;
    return raw * FSP_SCALE[fsp];
}

static PyObject *call_fallback_reader(PyObject *reader, const unsigned char *p, int width) {
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, width);
    if (raw == NULL) return NULL;
    PyObject *value = PyObject_CallOneArg(reader, raw);
    Py_DECREF(raw);
    return value;
}

static PyObject *decode_decimal(Decoder *self, Column *col, const unsigned char *p) {
    unsigned char data[40];
    char text[128];
    int width = col->width;
    int negative = !(p[0] & 0x80);
    memcpy(data, p, width);
    data[0] ^= 0x80;
    if (negative)
        for (int i = 0; i < width; i++) data[i] ^= 0xFF;
    int n = 0;
    if (negative) text[n++] = '-';
    int at = 0;
    for (int g = 0; g < col->ngroups; g++) {
        int size = col->gbytes[g], digits = col->gdigits[g];
        uint32_t group = (uint32_t)be(data + at, size);
        at += size;
        if (group >= POW10[digits]) return call_fallback_reader(col->obj, p, width);
        for (int d = digits - 1; d >= 0; d--) {
            text[n + d] = (char)('0' + group % 10);
            group /= 10;
        }
        n += digits;
    }
    n += snprintf(text + n, sizeof(text) - (size_t)n, "E-%d", col->a);
    PyObject *str = PyUnicode_FromStringAndSize(text, n);
    if (str == NULL) return NULL;
    PyObject *value = PyObject_CallOneArg(self->decimal, str);
    Py_DECREF(str);
    return value;
}

static PyObject *call2(PyObject *fn, int64_t x, int64_t y) {
    return PyObject_CallFunction(fn, "LL", (long long)x, (long long)y);
}

static PyObject *decode_date(uint64_t value) {
    if (value == 0) Py_RETURN_NONE;
    int year = (int)((value >> 9) & 0x7FFF), month = (int)((value >> 5) & 0x0F);
    int day = (int)(value & 0x1F);
    if (year == 0 || month == 0 || day == 0) Py_RETURN_NONE;
    return PyDate_FromDate(year, month, day);
}

static PyObject *decode_datetime2(Decoder *self, uint64_t packed, int64_t micro) {
    if (micro < 0 || micro >= 1000000) return call2(self->datetime2, (int64_t)packed, micro);
    int year_month = (int)((packed >> 22) & 0x1FFFF);
    PyObject *value = PyDateTime_FromDateAndTime(
        year_month / 13, year_month % 13, (int)((packed >> 17) & 0x1F),
        (int)((packed >> 12) & 0x1F), (int)((packed >> 6) & 0x3F), (int)(packed & 0x3F),
        (int)micro);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return value;
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian). */
static void civil(int64_t days, int *year, int *month, int *day) {
    int64_t z = days + 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    *year = (int)(yoe + era * 400 + (m <= 2));
    *month = (int)m;
    *day = (int)d;
}

static PyObject *decode_timestamp2(Decoder *self, int64_t seconds, int64_t micro) {
    if (micro < 0 || micro >= 1000000) return call2(self->timestamp, seconds, micro);
    int64_t days = floor_div(seconds, 86400);
    int64_t rest = seconds - days * 86400;
    int year, month, day;
    civil(days, &year, &month, &day);
    return PyDateTime_FromDateAndTime(year, month, day, (int)(rest / 3600),
                                      (int)(rest / 60 % 60), (int)(rest % 60), (int)micro);
}

static PyObject *decode_time2(int64_t packed, int64_t micro) {
    /* The library's arithmetic on a signed 24-bit value: bit 23 set means positive. */
    int64_t sign = ((packed >> 23) & 1) ? 1 : -1;
    if (sign == -1) packed = -packed;
    int64_t hours = (packed >> 12) & 0x3FF, minutes = (packed >> 6) & 0x3F, secs = packed & 0x3F;
    int64_t total = sign * ((hours * 3600 + minutes * 60 + secs) * 1000000 + micro);
    int64_t days = floor_div(total, 86400000000LL);
    int64_t rest = total - days * 86400000000LL;
    return PyDelta_FromDSU((int)days, (int)(rest / 1000000), (int)(rest % 1000000));
}

static PyObject *decode_bit(uint64_t value, int bits) {
    char text[64];
    for (int i = bits - 1; i >= 0; i--) {
        text[i] = (char)('0' + (value & 1));
        value >>= 1;
    }
    return PyUnicode_FromStringAndSize(text, bits);
}

static PyObject *decode_set(PyObject *members, uint64_t mask) {
    if (members == Py_None) Py_RETURN_NONE;
    PyObject *found = NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(members);
    for (Py_ssize_t i = 0; i < count && i < 64; i++) {
        if (!(mask & ((uint64_t)1 << i))) continue;
        if (found == NULL && (found = PySet_New(NULL)) == NULL) return NULL;
        if (PySet_Add(found, PyTuple_GET_ITEM(members, i)) < 0) {
            Py_DECREF(found);
            return NULL;
        }
    }
    if (found == NULL) Py_RETURN_NONE;
    return found;
}

/* One value at *pos; SHORT_READ when it runs past `len`. */
static PyObject *decode_value(Decoder *self, Column *col, const unsigned char *buf,
                              Py_ssize_t len, Py_ssize_t *pos) {
    const unsigned char *p = buf + *pos;
    Py_ssize_t left = len - *pos;
    if (col->width) {
        if (left < col->width) return SHORT_READ;
        *pos += col->width;
    }
    switch (col->kind) {
    case K_INT8: return PyLong_FromLong((int8_t)p[0]);
    case K_UINT8: return PyLong_FromLong(p[0]);
    case K_INT16: return PyLong_FromLong((int16_t)le(p, 2));
    case K_UINT16: return PyLong_FromLong((long)le(p, 2));
    case K_INT32: return PyLong_FromLong((int32_t)le(p, 4));
    case K_UINT32: return PyLong_FromUnsignedLong((unsigned long)le(p, 4));
    case K_INT64: return PyLong_FromLongLong((long long)le(p, 8));
    case K_UINT64: return PyLong_FromUnsignedLongLong((unsigned long long)le(p, 8));
    case K_INT24: {
        int32_t v = (int32_t)le(p, 3);
        return PyLong_FromLong(v & 0x800000 ? v - 0x1000000 : v);
    }
    case K_UINT24: return PyLong_FromLong((long)le(p, 3));
    case K_FLOAT: {
        double v = PyFloat_Unpack4((const char *)p, 1);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        return PyFloat_FromDouble(v);
    }
    case K_DOUBLE: {
        double v = PyFloat_Unpack8((const char *)p, 1);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        return PyFloat_FromDouble(v);
    }
    case K_DECIMAL: return decode_decimal(self, col, p);
    case K_DATE: return decode_date(le(p, 3));
    case K_DATETIME2: return decode_datetime2(self, be(p, 5), fraction(p + 5, col->a));
    case K_TIMESTAMP2: return decode_timestamp2(self, be_signed(p, 4), fraction(p + 4, col->a));
    case K_TIME2: return decode_time2(be_signed(p, 3), fraction(p + 3, col->a));
    case K_YEAR: return PyLong_FromLong(p[0] + 1900);
    case K_ENUM: {
        if (col->obj == Py_None) Py_RETURN_NONE;
        uint64_t index = le(p, col->a);
        if (index >= (uint64_t)PyList_GET_SIZE(col->obj)) {
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            return NULL;
        }
        PyObject *label = PyList_GET_ITEM(col->obj, (Py_ssize_t)index);
        Py_INCREF(label);
        return label;
    }
    case K_SET: return decode_set(col->obj, le(p, col->a));
    case K_BIT: {
        uint64_t mask = col->a == 64 ? ~(uint64_t)0 : (((uint64_t)1 << col->a) - 1);
        return decode_bit(be(p, col->width) & mask, col->a);
    }
    default: break;
    }
    /* Length-prefixed values. */
    int size = col->a;
    if (left < size) return SHORT_READ;
    uint64_t n = le(p, size);
    if ((uint64_t)(left - size) < n) return SHORT_READ;
    const char *data = (const char *)p + size;
    *pos += size + (Py_ssize_t)n;
    switch (col->kind) {
    case K_TEXT_UTF8: return PyUnicode_DecodeUTF8(data, (Py_ssize_t)n, NULL);
    case K_TEXT_CODEC:
        return PyUnicode_Decode(data, (Py_ssize_t)n, PyUnicode_AsUTF8(col->obj), NULL);
    case K_TEXT_RAW:
        /* The library keeps the bytes of a charset Python lacks, but decodes empty ones to
         * "" (CPython does so without looking the codec up). */
        if (n == 0) return PyUnicode_FromStringAndSize("", 0);
        return PyBytes_FromStringAndSize(data, (Py_ssize_t)n);
    case K_BYTES: return PyBytes_FromStringAndSize(data, (Py_ssize_t)n);
    case K_JSON: {
        if (n == 0) Py_RETURN_NONE;
        PyObject *rest = PyBytes_FromStringAndSize(data + 1, (Py_ssize_t)n - 1);
        if (rest == NULL) return NULL;
        PyObject *value = PyObject_CallFunction(self->parse_json, "iO", (unsigned char)data[0],
                                                rest);
        Py_DECREF(rest);
        return value;
    }
    default: break;
    }
    PyErr_SetString(PyExc_SystemError, "row decoder plan has an unknown column kind");
    return NULL;
}

static PyObject *decode_images(Decoder *self, const unsigned char *buf, Py_ssize_t len,
                               Py_ssize_t pos, Py_ssize_t end) {
    PyObject *images = PyList_New(0);
    if (images == NULL) return NULL;
    while (pos < end) {
        if (len - pos < self->null_bytes) goto short_read;
        const unsigned char *nulls = buf + pos;
        pos += self->null_bytes;
        PyObject *image = PyDict_New();
        if (image == NULL) goto error;
        if (PyList_Append(images, image) < 0) {
            Py_DECREF(image);
            goto error;
        }
        Py_DECREF(image);
        for (Py_ssize_t i = 0; i < self->count; i++) {
            PyObject *value;
            if (nulls[i >> 3] & (1 << (i & 7))) {
                value = Py_None;
                Py_INCREF(value);
            } else {
                value = decode_value(self, &self->columns[i], buf, len, &pos);
                if (value == SHORT_READ) goto short_read;
                if (value == NULL) goto error;
            }
            int failed = PyDict_SetItem(image, PyTuple_GET_ITEM(self->names, i), value);
            Py_DECREF(value);
            if (failed) goto error;
        }
    }
    return images;
short_read:
    Py_DECREF(images);
    return SHORT_READ;
error:
    Py_DECREF(images);
    return NULL;
}

static PyObject *Decoder_call(PyObject *op, PyObject *args, PyObject *kwargs) {
    Decoder *self = (Decoder *)op;
    PyObject *body;
    Py_ssize_t pos, end;
    if (kwargs != NULL || !PyArg_ParseTuple(args, "Onn", &body, &pos, &end) ||
        !PyBytes_CheckExact(body) || pos < 0) {
        /* Anything but (bytes, offset, offset): the Python decoder says what it makes of it. */
        PyErr_Clear();
        return PyObject_Call(self->fallback, args, kwargs);
    }
    PyObject *images = decode_images(self, (const unsigned char *)PyBytes_AS_STRING(body),
                                     PyBytes_GET_SIZE(body), pos, end);
    if (images == SHORT_READ) return PyObject_Call(self->fallback, args, NULL);
    return images;
}

static int parse_column(PyObject *spec, Column *col) {
    PyObject *obj;
    if (!PyArg_ParseTuple(spec, "iiiO", &col->kind, &col->a, &col->width, &obj)) return -1;
    if (col->kind < 0 || col->kind >= K_COUNT || col->width < 0 || col->width > 40) {
        PyErr_SetString(PyExc_ValueError, "bad column plan");
        return -1;
    }
    Py_INCREF(obj);
    col->obj = obj;
    if (col->kind == K_DECIMAL) {
        /* obj: (fallback reader, ((bytes, digits), ...)) */
        PyObject *reader, *groups;
        if (!PyArg_ParseTuple(obj, "OO!", &reader, &PyTuple_Type, &groups)) return -1;
        Py_ssize_t count = PyTuple_GET_SIZE(groups);
        if (count > MAX_GROUPS) {
            PyErr_SetString(PyExc_ValueError, "too many DECIMAL digit groups");
            return -1;
        }
        col->ngroups = (int)count;
        for (Py_ssize_t g = 0; g < count; g++) {
            int size, digits;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(groups, g), "ii", &size, &digits)) return -1;
            if (size < 1 || size > 4 || digits < 1 || digits > 9) {
                PyErr_SetString(PyExc_ValueError, "bad DECIMAL digit group");
                return -1;
            }
            col->gbytes[g] = (unsigned char)size;
            col->gdigits[g] = (unsigned char)digits;
        }
        Py_INCREF(reader);
        Py_DECREF(col->obj);
        col->obj = reader;
    }
    return 0;
}

static void Decoder_dealloc(PyObject *op) {
    Decoder *self = (Decoder *)op;
    if (self->columns != NULL) {
        for (Py_ssize_t i = 0; i < self->count; i++) Py_XDECREF(self->columns[i].obj);
        PyMem_Free(self->columns);
    }
    Py_XDECREF(self->names);
    Py_XDECREF(self->fallback);
    Py_XDECREF(self->decimal);
    Py_XDECREF(self->parse_json);
    Py_XDECREF(self->datetime2);
    Py_XDECREF(self->timestamp);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *Decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"names", "plan", "fallback", "helpers", NULL};
    PyObject *names, *plan, *fallback, *helpers;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OO!", keywords, &PyTuple_Type, &names,
                                     &PyTuple_Type, &plan, &fallback, &PyTuple_Type, &helpers))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(plan);
    if (PyTuple_GET_SIZE(names) != count || PyTuple_GET_SIZE(helpers) != 4) {
        PyErr_SetString(PyExc_ValueError, "names, plan and helpers do not fit together");
        return NULL;
    }
    Decoder *self = (Decoder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->columns = PyMem_Calloc(count ? (size_t)count : 1, sizeof(Column));
    if (self->columns == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->count = count;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (parse_column(PyTuple_GET_ITEM(plan, i), &self->columns[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    }
    self->null_bytes = (count + 7) / 8;
    Py_INCREF(names);
    self->names = names;
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->decimal = Py_NewRef(PyTuple_GET_ITEM(helpers, 0));
    self->parse_json = Py_NewRef(PyTuple_GET_ITEM(helpers, 1));
    self->datetime2 = Py_NewRef(PyTuple_GET_ITEM(helpers, 2));
    self->timestamp = Py_NewRef(PyTuple_GET_ITEM(helpers, 3));
    return (PyObject *)self;
}

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc.source._rownative.Decoder",
    .tp_doc = PyDoc_STR("Decoder(names, plan, fallback, helpers): called as (body, start, end), "
                        "returns the row images in body[start:end], as the fallback would."),
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Decoder_new,
    .tp_dealloc = Decoder_dealloc,
    .tp_call = Decoder_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc.source._rownative",
    .m_doc = PyDoc_STR("Compiled decoding of full row images (see cdc.source.rownative)."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__rownative(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    if (PyType_Ready(&DecoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* Bumped whenever the plan cdc/source/rownative.py builds changes shape. */
    if (PyModule_AddObjectRef(m, "Decoder", (PyObject *)&DecoderType) < 0 ||
        PyModule_AddIntConstant(m, "PLAN_VERSION", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    static const char *kinds[] = {
        "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64",
        "INT24", "UINT24", "FLOAT", "DOUBLE",
        "TEXT_UTF8", "TEXT_CODEC", "TEXT_RAW", "BYTES", "JSON",
        "DECIMAL", "DATE", "DATETIME2", "TIMESTAMP2", "TIME2", "YEAR",
        "ENUM", "SET", "BIT"};
    for (int k = 0; k < K_COUNT; k++) {
        if (PyModule_AddIntConstant(m, kinds[k], k) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
