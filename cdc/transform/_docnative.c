/*
 * The compiled document encoder: a row image turned into the JSON bytes of its document,
 * equal to orjson.dumps(document(row)) of the Python document builder in
 * cdc/transform/mapping.py, which stays the fallback and the oracle (cdc/transform/docnative.py
 * builds the plan this runs).
 *
 * An Encoder is made once per mapping and table map from one entry per field: the column to
 * read, the field's JSON key with its separator, how its value is converted (kept, a date or
 * time written as ISO 8601 here, BIT text read as a number, a Decimal written as fixed-point
 * text, plain JSON text written without its whitespace, or the Python converter called),
 * and the static fields as ready JSON. Values are written here when they are None, bool, int
 * within 64 bits, str, or a naive date/datetime; anything else is written by orjson. On any
 * error (a missing column, a converter raising, a value orjson refuses) the whole row goes to
 * the Python fallback, so the error raised is the one the Python path raises.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum {
    M_KEEP, M_TEXT, M_DATE, M_DATETIME_UTC, M_TIMESTAMP, M_BIT, M_JSON_TEXT, M_DECIMAL_TEXT,
    M_DECIMAL_NUMBER, M_CONVERT, M_COUNT
};

typedef struct {
    PyObject *column;  /* str: the key in the row image */
    const char *key;   /* the JSON key with its leading '{' or ',' and trailing ':' */
    Py_ssize_t key_len;
    PyObject *key_obj; /* owns key */
    int mode;
    PyObject *convert; /* the Python converter (M_TEXT and M_CONVERT call it) */
} Field;

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    Field *fields;
    PyObject *tail;     /* bytes: the static fields and the closing brace */
    PyObject *dumps;    /* orjson.dumps */
    PyObject *fallback; /* row -> bytes, the Python path */
    PyObject *decimal;  /* decimal.Decimal */
} Encoder;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int grow(Buffer *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap * 2;
    if (cap < b->len + more) cap = b->len + more + 256;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buffer *b, const char *s, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

/* Decimal digits of v, most significant first, into text (20 bytes or more); their count. */
static int digits_of(uint64_t v, char *text) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) text[i] = tmp[n - 1 - i];
    return n;
}

/* v (0 <= v < 10**width) zero-padded to width digits. */
static inline char *padded(char *out, int v, int width) {
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return out + width;
}

/* "YYYY-MM-DD" (four-digit years: date and datetime keep year >= 1). */
static inline char *iso_date(char *out, PyObject *value) {
    out = padded(out, PyDateTime_GET_YEAR(value), 4);
    *out++ = '-';
    out = padded(out, PyDateTime_GET_MONTH(value), 2);
    *out++ = '-';
    return padded(out, PyDateTime_GET_DAY(value), 2);
}

/* A str as orjson writes it: UTF-8, with '"', '\\' and control characters escaped. */
static int put_text(Buffer *b, PyObject *text) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (s == NULL) return -1;
    if (grow(b, n * 6 + 2) < 0) return -1;
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\t': *out++ = 't'; break;
        case '\n': *out++ = 'n'; break;
        case '\f': *out++ = 'f'; break;
        case '\r': *out++ = 'r'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = HEX[c >> 4];
            *out++ = HEX[c & 15];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

static int put_dumps(Encoder *self, Buffer *b, PyObject *value) {
    PyObject *json = PyObject_CallOneArg(self->dumps, value);
    if (json == NULL) return -1;
    int failed = put(b, PyBytes_AS_STRING(json), PyBytes_GET_SIZE(json));
    Py_DECREF(json);
    return failed;
}

static int put_value(Encoder *self, Buffer *b, PyObject *value) {
    if (value == Py_None) return put(b, "null", 4);
    if (PyUnicode_CheckExact(value)) return put_text(b, value);
    if (PyLong_CheckExact(value)) {
        char digits[32];
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (overflow == 0) {
            if (v < 0) {
                digits[0] = '-';
                return put(b, digits, 1 + digits_of(0 - (uint64_t)v, digits + 1));
            }
            return put(b, digits, digits_of((uint64_t)v, digits));
        }
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(value);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return put_dumps(self, b, value);
            }
            return put(b, digits, digits_of(u, digits));
        }
        return put_dumps(self, b, value);
    }
    if (value == Py_True) return put(b, "true", 4);
    if (value == Py_False) return put(b, "false", 5);
    return put_dumps(self, b, value);
}

/* A naive datetime as isoformat() + "Z"; 0 if the value is not one (nothing written). */
static int put_utc(Buffer *b, PyObject *value, int *done) {
    *done = 0;
    if (!PyDateTime_CheckExact(value) || PyDateTime_DATE_GET_TZINFO(value) != Py_None) return 0;
    char text[40], *out = text;
    *out++ = '"';
    out = iso_date(out, value);
    *out++ = 'T';
    out = padded(out, PyDateTime_DATE_GET_HOUR(value), 2);
    *out++ = ':';
    out = padded(out, PyDateTime_DATE_GET_MINUTE(value), 2);
    *out++ = ':';
    out = padded(out, PyDateTime_DATE_GET_SECOND(value), 2);
    int micro = PyDateTime_DATE_GET_MICROSECOND(value);
    if (micro) {
        *out++ = '.';
        out = padded(out, micro, 6);
    }
    *out++ = 'Z';
    *out++ = '"';
    int n = (int)(out - text);
    *done = 1;
    return put(b, text, n);
}

static int is_epoch(PyObject *value) {
    return PyDateTime_CheckExact(value) && PyDateTime_GET_YEAR(value) == 1970 &&
           PyDateTime_GET_MONTH(value) == 1 && PyDateTime_GET_DAY(value) == 1 &&
           PyDateTime_DATE_GET_HOUR(value) == 0 && PyDateTime_DATE_GET_MINUTE(value) == 0 &&
           PyDateTime_DATE_GET_SECOND(value) == 0 && PyDateTime_DATE_GET_MICROSECOND(value) == 0;
}

/*
 * JSON text as orjson.dumps(orjson.loads(text)) writes it, for the plain subset where that is
 * the text without its whitespace: objects without repeated keys, arrays, strings without
 * escapes or control characters, integers of up to 18 digits, true, false and null. Returns
 * 1 when written, 0 when the text is outside the subset (nothing written: the converter
 * decides), -1 on a memory error.
 */
#define JSON_MAX_DEPTH 64
#define JSON_MAX_KEYS 32

typedef struct {
    const char *s;
    Py_ssize_t n, at;
    Buffer *out;
} Minify;

static void skip_space(Minify *m) {
    while (m->at < m->n) {
        char c = m->s[m->at];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        m->at++;
    }
}

/* A string token at m->at; its bytes (quotes included) in *start, *len. */
static int json_string(Minify *m, Py_ssize_t *start, Py_ssize_t *len) {
    Py_ssize_t i = m->at + 1;
    while (i < m->n) {
        unsigned char c = (unsigned char)m->s[i];
        if (c == '"') break;
        if (c == '\\' || c < 0x20) return 0;
        i++;
    }
    if (i >= m->n) return 0;
    *start = m->at;
    *len = i + 1 - m->at;
    m->at = i + 1;
    return 1;
}

static int json_value(Minify *m, int depth);

static int json_object(Minify *m, int depth) {
    Py_ssize_t keys[JSON_MAX_KEYS], lens[JSON_MAX_KEYS];
    int count = 0;
    m->at++;
    if (put(m->out, "{", 1) < 0) return -1;
    skip_space(m);
    if (m->at < m->n && m->s[m->at] == '}') {
        m->at++;
        return put(m->out, "}", 1) < 0 ? -1 : 1;
    }
    for (;;) {
        skip_space(m);
        Py_ssize_t start, len;
        if (m->at >= m->n || m->s[m->at] != '"' || !json_string(m, &start, &len)) return 0;
        if (count == JSON_MAX_KEYS) return 0;
        for (int k = 0; k < count; k++)
            if (lens[k] == len && memcmp(m->s + keys[k], m->s + start, (size_t)len) == 0)
                return 0; /* a repeated key: orjson keeps the last value, in the first place */
        keys[count] = start;
        lens[count++] = len;
        if (put(m->out, m->s + start, len) < 0) return -1;
        skip_space(m);
        if (m->at >= m->n || m->s[m->at] != ':') return 0;
        m->at++;
        if (put(m->out, ":", 1) < 0) return -1;
        int done = json_value(m, depth + 1);
        if (done <= 0) return done;
        skip_space(m);
        if (m->at >= m->n) return 0;
        char c = m->s[m->at++];
        if (c == '}') return put(m->out, "}", 1) < 0 ? -1 : 1;
        if (c != ',') return 0;
        if (put(m->out, ",", 1) < 0) return -1;
    }
}

static int json_array(Minify *m, int depth) {
    m->at++;
    if (put(m->out, "[", 1) < 0) return -1;
    skip_space(m);
    if (m->at < m->n && m->s[m->at] == ']') {
        m->at++;
        return put(m->out, "]", 1) < 0 ? -1 : 1;
    }
    for (;;) {
        int done = json_value(m, depth + 1);
        if (done <= 0) return done;
        skip_space(m);
        if (m->at >= m->n) return 0;
        char c = m->s[m->at++];
        if (c == ']') return put(m->out, "]", 1) < 0 ? -1 : 1;
        if (c != ',') return 0;
        if (put(m->out, ",", 1) < 0) return -1;
    }
}

static int json_number(Minify *m) {
    Py_ssize_t start = m->at, i = m->at;
    int negative = 0;
    if (i < m->n && m->s[i] == '-') {
        negative = 1;
        i++;
    }
    Py_ssize_t digits = i;
    if (i < m->n && m->s[i] == '0') {
        i++;
    } else {
        while (i < m->n && m->s[i] >= '0' && m->s[i] <= '9') i++;
    }
    Py_ssize_t count = i - digits;
    if (count == 0 || count > 18) return 0;
    if (i < m->n && (m->s[i] == '.' || m->s[i] == 'e' || m->s[i] == 'E' ||
                     (m->s[i] >= '0' && m->s[i] <= '9')))
        return 0; /* a fraction, an exponent or a leading zero: orjson decides */
    m->at = i;
    if (negative && count == 1 && m->s[digits] == '0') return put(m->out, "0", 1) < 0 ? -1 : 1;
    return put(m->out, m->s + start, i - start) < 0 ? -1 : 1;
}

static int json_word(Minify *m, const char *word, Py_ssize_t len) {
    if (m->n - m->at < len || memcmp(m->s + m->at, word, (size_t)len) != 0) return 0;
    m->at += len;
    return put(m->out, word, len) < 0 ? -1 : 1;
}

static int json_value(Minify *m, int depth) {
    if (depth > JSON_MAX_DEPTH) return 0;
    skip_space(m);
    if (m->at >= m->n) return 0;
    char c = m->s[m->at];
    if (c == '{') return json_object(m, depth);
    if (c == '[') return json_array(m, depth);
    if (c == '"') {
        Py_ssize_t start, len;
        if (!json_string(m, &start, &len)) return 0;
        return put(m->out, m->s + start, len) < 0 ? -1 : 1;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return json_number(m);
    if (c == 't') return json_word(m, "true", 4);
    if (c == 'f') return json_word(m, "false", 5);
    if (c == 'n') return json_word(m, "null", 4);
    return 0;
}

static int put_json_text(Buffer *b, PyObject *text) {
    Minify m;
    m.s = PyUnicode_AsUTF8AndSize(text, &m.n);
    if (m.s == NULL) {
        PyErr_Clear(); /* lone surrogates: the converter raises what it raises */
        return 0;
    }
    m.at = 0;
    m.out = b;
    Py_ssize_t mark = b->len;
    int done = json_value(&m, 0);
    if (done == 1) {
        skip_space(&m);
        if (m.at == m.n) return 1;
        done = 0;
    }
    b->len = mark;
    return done;
}

static int put_field(Encoder *self, Buffer *b, Field *f, PyObject *value) {
    int done;
    switch (f->mode) {
    case M_KEEP: return put_value(self, b, value);
    case M_TEXT:
        if (value == Py_None || PyUnicode_CheckExact(value)) return put_value(self, b, value);
        break;
    case M_DATE:
        if (value == Py_None) return put(b, "null", 4);
        if (PyDate_CheckExact(value)) {
            char text[16], *out = text;
            *out++ = '"';
            out = iso_date(out, value);
            *out++ = '"';
            return put(b, text, out - text);
        }
        break;
    case M_DATETIME_UTC:
        if (value == Py_None) return put(b, "null", 4);
        if (put_utc(b, value, &done) < 0) return -1;
        if (done) return 0;
        break;
    case M_TIMESTAMP:
        if (value == Py_None || is_epoch(value)) return put(b, "null", 4);
        if (put_utc(b, value, &done) < 0) return -1;
        if (done) return 0;
        break;
    case M_BIT:
        /* The decoder's BIT text ('101'), read as a number; other inputs take the converter. */
        if (value == Py_None || PyLong_CheckExact(value)) return put_value(self, b, value);
        if (PyUnicode_CheckExact(value) && PyUnicode_IS_ASCII(value)) {
            Py_ssize_t n = PyUnicode_GET_LENGTH(value);
            const char *s = (const char *)PyUnicode_1BYTE_DATA(value);
            uint64_t bits = 0;
            Py_ssize_t i = 0;
            for (; i < n && (s[i] == '0' || s[i] == '1'); i++)
                bits = (bits << 1) | (uint64_t)(s[i] - '0');
            if (n > 0 && n <= 64 && i == n) {
                char digits[24];
                int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)bits);
                return put(b, digits, len);
            }
        }
        break;
    case M_DECIMAL_TEXT:
    case M_DECIMAL_NUMBER:
        /* format(value, "f") is str(value) whenever str() writes no exponent. */
        if (value == Py_None) return put(b, "null", 4);
        if (Py_TYPE(value) == (PyTypeObject *)self->decimal) {
            PyObject *text = PyObject_Str(value);
            if (text == NULL) return -1;
            Py_ssize_t n;
            const char *s = PyUnicode_AsUTF8AndSize(text, &n);
            int failed = s == NULL ? -1 : 0;
            if (s != NULL && memchr(s, 'E', (size_t)n) == NULL) {
                if (f->mode == M_DECIMAL_NUMBER) {
                    failed = put(b, s, n);
                } else {
                    failed = put(b, "\"", 1) < 0 || put(b, s, n) < 0 || put(b, "\"", 1) < 0;
                }
                Py_DECREF(text);
                return failed ? -1 : 0;
            }
            Py_DECREF(text);
            if (failed) return -1;
        }
        break;
    case M_JSON_TEXT:
        if (value == Py_None) return put(b, "null", 4);
        if (PyUnicode_CheckExact(value)) {
            int written = put_json_text(b, value);
            if (written != 0) return written < 0 ? -1 : 0;
        }
        break;
    default: break;
    }
    PyObject *converted = PyObject_CallOneArg(f->convert, value);
    if (converted == NULL) return -1;
    int failed = put_value(self, b, converted);
    Py_DECREF(converted);
    return failed;
}

static PyObject *Encoder_call(PyObject *op, PyObject *args, PyObject *kwargs) {
    Encoder *self = (Encoder *)op;
    PyObject *row;
    if (kwargs != NULL || PyTuple_GET_SIZE(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "an Encoder takes one row image");
        return NULL;
    }
    row = PyTuple_GET_ITEM(args, 0);
    if (!PyDict_CheckExact(row)) return PyObject_CallOneArg(self->fallback, row);
    Buffer b = {NULL, 0, 0};
    if (grow(&b, 512) < 0) return NULL;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Field *f = &self->fields[i];
        PyObject *value = PyDict_GetItemWithError(row, f->column);
        if (value == NULL) goto fallback;
        if (put(&b, f->key, f->key_len) < 0) goto fallback;
        Py_INCREF(value);
        int failed = put_field(self, &b, f, value);
        Py_DECREF(value);
        if (failed) goto fallback;
    }
    if (put(&b, PyBytes_AS_STRING(self->tail), PyBytes_GET_SIZE(self->tail)) < 0) goto fallback;
    PyObject *json = PyBytes_FromStringAndSize(b.data, b.len);
    PyMem_Free(b.data);
    return json;
fallback:
    /* The Python path raises what it raises (or, for a value written differently, agrees). */
    PyErr_Clear();
    PyMem_Free(b.data);
    return PyObject_CallOneArg(self->fallback, row);
}

static void Encoder_dealloc(PyObject *op) {
    Encoder *self = (Encoder *)op;
    if (self->fields != NULL) {
        for (Py_ssize_t i = 0; i < self->count; i++) {
            Py_XDECREF(self->fields[i].column);
            Py_XDECREF(self->fields[i].key_obj);
            Py_XDECREF(self->fields[i].convert);
        }
        PyMem_Free(self->fields);
    }
    Py_XDECREF(self->tail);
    Py_XDECREF(self->dumps);
    Py_XDECREF(self->fallback);
    Py_XDECREF(self->decimal);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *Encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"fields", "tail", "dumps", "fallback", "decimal", NULL};
    PyObject *fields, *tail, *dumps, *fallback, *decimal;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!OOO!", keywords, &PyTuple_Type, &fields,
                                     &PyBytes_Type, &tail, &dumps, &fallback, &PyType_Type,
                                     &decimal))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    Encoder *self = (Encoder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->fields = PyMem_Calloc(count ? (size_t)count : 1, sizeof(Field));
    if (self->fields == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->count = count;
    for (Py_ssize_t i = 0; i < count; i++) {
        Field *f = &self->fields[i];
        PyObject *column, *key, *convert;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "UO!iO", &column, &PyBytes_Type, &key,
                              &f->mode, &convert)) {
            Py_DECREF(self);
            return NULL;
        }
        if (f->mode < 0 || f->mode >= M_COUNT) {
            Py_DECREF(self);
            PyErr_SetString(PyExc_ValueError, "bad field plan");
            return NULL;
        }
        f->column = Py_NewRef(column);
        f->key_obj = Py_NewRef(key);
        f->key = PyBytes_AS_STRING(key);
        f->key_len = PyBytes_GET_SIZE(key);
        f->convert = Py_NewRef(convert);
    }
    self->tail = Py_NewRef(tail);
    self->dumps = Py_NewRef(dumps);
    self->fallback = Py_NewRef(fallback);
    self->decimal = Py_NewRef(decimal);
    return (PyObject *)self;
}

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc.transform._docnative.Encoder",
    .tp_doc = PyDoc_STR("Encoder(fields, tail, dumps, fallback, decimal): called with a row "
                        "image, returns the JSON bytes of its document, as fallback(row) would."),
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Encoder_new,
    .tp_dealloc = Encoder_dealloc,
    .tp_call = Encoder_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc.transform._docnative",
    .m_doc = PyDoc_STR("Compiled encoding of documents (see cdc.transform.docnative)."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__docnative(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    if (PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* PLAN_VERSION is bumped whenever the plan cdc/transform/docnative.py builds changes. */
    if (PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0 ||
        PyModule_AddIntConstant(m, "PLAN_VERSION", 1) < 0 ||
        PyModule_AddIntConstant(m, "KEEP", M_KEEP) < 0 ||
        PyModule_AddIntConstant(m, "TEXT", M_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "DATE", M_DATE) < 0 ||
        PyModule_AddIntConstant(m, "DATETIME_UTC", M_DATETIME_UTC) < 0 ||
        PyModule_AddIntConstant(m, "TIMESTAMP", M_TIMESTAMP) < 0 ||
        PyModule_AddIntConstant(m, "BIT", M_BIT) < 0 ||
        PyModule_AddIntConstant(m, "JSON_TEXT", M_JSON_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "DECIMAL_TEXT", M_DECIMAL_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "DECIMAL_NUMBER", M_DECIMAL_NUMBER) < 0 ||
        PyModule_AddIntConstant(m, "CONVERT", M_CONVERT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
