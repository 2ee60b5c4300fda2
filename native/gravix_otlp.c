/* gravix_otlp.c - OTLP/HTTP protobuf requests -> facts / events Arrow buffers, in one pass.
 *
 * ExportTraceServiceRequest -> facts (SERVER spans), ExportLogsServiceRequest -> events, by
 * exactly the mapping of gravixd/core/otlp.py (docs/otlp.md), which stays the reference:
 * semantic-convention keys to columns, the other attributes (the record's, then the
 * resource's where the record has no such key) to the map, values as the text Python
 * produces. It is compiled inside gravix_decode.c's translation unit (included at its end),
 * so the wire readers, column buffers and Arrow export stay static and inlined.
 *
 * Records the mapping rejects (a bad trace id, times, a status code or size that is no
 * integer in range) are checked in its order, counted by reason and left out; the first
 * ones are reported by position, for Python to word as it words its own.
 *
 * Array and key-value-list values are written as the JSON text Python writes.
 *
 * It must never produce a row Python would not: whatever it does not map itself - an
 * AnyValue or body given twice (protobuf merges those), severity text outside ASCII, a
 * key-value list of more than MAX_JSON_ENTRIES entries - makes the call end in
 * GX_ERR_FALLBACK, and the caller runs the Python mapping on the whole body. The walk
 * still goes to the end, checking and counting records only, so that a body handed to
 * Python is known to parse and to hold at most max_records records.
 * And it must never accept a body upb rejects: every string field of the request, mapped
 * or not (scope names, span events, links, status), is UTF-8 checked, and
 * nesting is held one level below upb's limit (a C error sends the body to upb, which has
 * the last word). It never reads outside [body, body + len): every read goes through the
 * bounds-checked readers of gravix_decode.c, and native/fuzz_decode.c fuzzes it.
 */

#include <math.h>

/* ---- what C checks of the parts it does not map ---------------------------------------- */

/* Message types of the request whose strings must be UTF-8 checked. */
enum { V_STRING = 1, V_ANY, V_KV, V_ARRAY, V_KVLIST, V_SCOPE, V_EVENT, V_LINK, V_STATUS, V_ENTITY };

/* What a length-delimited field (by its tag) of message `type` holds: V_STRING, a message
 * type, or 0 (bytes, or unknown: skipped unchecked, as upb keeps unknown fields as bytes). */
static int field_kind(int type, uint32_t tag) {
    switch (type) {
    case V_ANY: /* string_value 1, array_value 5, kvlist_value 6 (bytes_value 7: bytes) */
        return tag == 0x0a ? V_STRING : tag == 0x2a ? V_ARRAY : tag == 0x32 ? V_KVLIST : 0;
    case V_KV: return tag == 0x0a ? V_STRING : tag == 0x12 ? V_ANY : 0;
    case V_ARRAY: return tag == 0x0a ? V_ANY : 0;
    case V_KVLIST: return tag == 0x0a ? V_KV : 0;
    case V_SCOPE: /* name 1, version 2, attributes 3 */
        return tag == 0x0a || tag == 0x12 ? V_STRING : tag == 0x1a ? V_KV : 0;
    case V_EVENT: return tag == 0x12 ? V_STRING : tag == 0x1a ? V_KV : 0; /* name 2, attrs 3 */
    case V_LINK: return tag == 0x1a ? V_STRING : tag == 0x22 ? V_KV : 0; /* state 3, attrs 4 */
    case V_STATUS: return tag == 0x12 ? V_STRING : 0;                      /* message 2 */
    case V_ENTITY: /* schema_url 1, type 2, id_keys 3, description_keys 4 */
        return tag == 0x0a || tag == 0x12 || tag == 0x1a || tag == 0x22 ? V_STRING : 0;
    default: return 0;
    }
}

/* Checks a message of `type` that is not mapped: its strings UTF-8, its nesting. `depth` is
 * the message's own (the request is MAX_DEPTH, each level one less); below 1 is too deep,
 * one level stricter than upb, so that C never accepts what upb refuses. */
static const uint8_t *validate(decoder *d, int type, const uint8_t *p, const uint8_t *end,
                               int depth) {
    if (depth < 1) return fail(d, GX_ERR_TOO_DEEP, p);
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        CHECK(read_tag(d, p, end, &tag));
        int kind = (tag & 7) == 2 ? field_kind(type, tag) : 0;
        if (kind == V_STRING) {
            slice ignored;
            CHECK(read_string(d, p, end, &ignored));
        } else if (kind) {
            uint32_t len;
            CHECK(read_length(d, p, end, &len));
            if (!validate(d, kind, p, p + len, depth - 1)) return NULL;
            p += len;
        } else {
            CHECK(skip_field(d, p, end, tag, tag_at, depth));
        }
    }
    return p;
}

/* ---- AnyValue --------------------------------------------------------------------------- */

/* An AnyValue as read: `kind` is the field number of its oneof member (0: none), or
 * ANY_AMBIGUOUS when members came more than once (protobuf would merge them). */
enum { ANY_STRING = 1, ANY_BOOL, ANY_INT, ANY_DOUBLE, ANY_ARRAY, ANY_KVLIST, ANY_BYTES,
       ANY_STRINDEX, ANY_AMBIGUOUS = 255 };

typedef struct {
    const uint8_t *at; /* where the value starts in the body, for GX_ERR_FALLBACK */
    uint8_t kind;
    slice s;           /* string_value, bytes_value; the ArrayValue / KeyValueList message */
    uint64_t bits;     /* bool_value, int_value, double_value */
} any_value;

static const uint8_t *parse_any(decoder *d, const uint8_t *p, const uint8_t *end, int depth,
                                any_value *v) {
    if (depth < 1) return fail(d, GX_ERR_TOO_DEEP, p);
    int members = 0;
    uint64_t x;
    uint32_t len;
    v->at = p;
    v->kind = 0;
    v->s.ptr = p;
    v->s.len = 0;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        CHECK(read_tag(d, p, end, &tag));
        switch (tag) {
        case 0x0a: CHECK(read_string(d, p, end, &v->s)); v->kind = ANY_STRING; break;
        case 0x10: CHECK(read_varint(d, p, end, &x)); v->bits = x != 0; v->kind = ANY_BOOL; break;
        case 0x18: CHECK(read_varint(d, p, end, &x)); v->bits = x; v->kind = ANY_INT; break;
        case 0x21:
            if (end - p < 8) return fail(d, GX_ERR_TRUNCATED_FIXED, p);
            v->bits = load64(p);
            p += 8;
            v->kind = ANY_DOUBLE;
            break;
        case 0x2a:
        case 0x32:
            CHECK(read_length(d, p, end, &len));
            if (!validate(d, tag == 0x2a ? V_ARRAY : V_KVLIST, p, p + len, depth - 1)) return NULL;
            v->s.ptr = p;
            v->s.len = len;
            p += len;
            v->kind = (uint8_t)(tag >> 3);
            break;
        case 0x3a:
            CHECK(read_length(d, p, end, &len));
            v->s.ptr = p;
            v->s.len = len;
            p += len;
            v->kind = ANY_BYTES;
            break;
        case 0x40: CHECK(read_varint(d, p, end, &x)); v->kind = ANY_STRINDEX; break;
        default: CHECK(skip_field(d, p, end, tag, tag_at, depth)); continue;
        }
        members++;
    }
    if (members > 1) v->kind = ANY_AMBIGUOUS;
    return p;
}

typedef struct {
    slice key;
    any_value value;
} key_value;

/* A KeyValue: key 1, value 2 (key_strindex 3 is a profiles-only reference: ignored). */
static const uint8_t *parse_kv(decoder *d, const uint8_t *p, const uint8_t *end, int depth,
                               key_value *kv) {
    if (depth < 1) return fail(d, GX_ERR_TOO_DEEP, p);
    int values = 0;
    kv->key.ptr = p;
    kv->key.len = 0;
    kv->value.at = p;
    kv->value.kind = 0;
    kv->value.s.ptr = p;
    kv->value.s.len = 0;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        CHECK(read_tag(d, p, end, &tag));
        if (tag == 0x0a) {
            CHECK(read_string(d, p, end, &kv->key));
        } else if (tag == 0x12) {
            uint32_t len;
            CHECK(read_length(d, p, end, &len));
            CHECK(parse_any(d, p, p + len, depth - 1, &kv->value));
            values++;
        } else {
            CHECK(skip_field(d, p, end, tag, tag_at, depth));
        }
    }
    if (values > 1) kv->value.kind = ANY_AMBIGUOUS;
    return p;
}

/* ---- text of values --------------------------------------------------------------------- */

/* Generated text (numbers, base64) lives in chunks that never move until the call ends. */
typedef struct text_chunk {
    struct text_chunk *next;
    size_t cap, used;
    uint8_t data[];
} text_chunk;

static uint8_t *text_alloc(decoder *d, text_chunk **head, size_t n) {
    text_chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        text_chunk *fresh = malloc(sizeof(text_chunk) + cap);
        if (!fresh) {
            fail(d, GX_ERR_NO_MEMORY, d->body);
            return NULL;
        }
        fresh->next = c;
        fresh->cap = cap;
        fresh->used = 0;
        *head = c = fresh;
    }
    uint8_t *out = c->data + c->used;
    c->used += n;
    return out;
}

/* Frees every chunk but the newest, which is emptied for reuse. */
static void text_reset(text_chunk **head) {
    text_chunk *c = *head;
    if (!c) return;
    for (text_chunk *old = c->next, *next; old; old = next) {
        next = old->next;
        free(old);
    }
    c->next = NULL;
    c->used = 0;
}

static void text_free(text_chunk **head) {
    text_reset(head);
    free(*head);
    *head = NULL;
}

static int int_text(int64_t value, char *out) {
    char digits[24];
    int n = 0, len = 0;
    uint64_t u = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (value < 0) out[len++] = '-';
    while (n) out[len++] = digits[--n];
    return len;
}

/* The decimal one unit above (`up`) or below `text` (d[.ddd]e[+-]X, as %.*e writes it) in
 * its last digit, in the same form, into `out` (40 bytes). */
static void neighbour(const char *text, int up, char *out) {
    char digits[20];
    int n = 0;
    const char *c = text;
    for (; *c != 'e'; c++) {
        if (*c != '.') digits[n++] = *c;
    }
    int exponent = atoi(c + 1), i = n - 1;
    if (up) {
        while (i >= 0 && digits[i] == '9') digits[i--] = '0';
        if (i < 0) { /* 9.99e4 -> 1.00e5 */
            digits[0] = '1';
            exponent++;
        } else {
            digits[i]++;
        }
    } else {
        while (digits[i] == '0') digits[i--] = '9'; /* the leading digit is not 0 */
        digits[i]--;
        if (digits[0] == '0') { /* 1.00e5 -> 9.99e4 */
            memmove(digits, digits + 1, (size_t)n - 1);
            digits[n - 1] = '9';
            exponent--;
        }
    }
    int len = 0;
    out[len++] = digits[0];
    if (n > 1) {
        out[len++] = '.';
        memcpy(out + len, digits + 1, (size_t)n - 1);
        len += n - 1;
    }
    snprintf(out + len, 40 - (size_t)len, "e%d", exponent);
}

/* Python's repr of a float (the shortest text that reads back as the same double, in
 * fixed notation for exponents -4 < decpt <= 16, else d.ddde+XX), and proto3 JSON's
 * NaN / Infinity / -Infinity. `json`: as msgspec's JSON encoder writes a finite float
 * instead (the same digits; fixed notation for -5 < decpt <= 16, else d.ddde[-]X).
 * `out` has room for 32 bytes. */
static int double_text(double x, char *out, int json) {
    if (isnan(x)) return (int)(memcpy(out, "NaN", 3), 3);
    if (isinf(x)) {
        if (x > 0) return (int)(memcpy(out, "Infinity", 8), 8);
        return (int)(memcpy(out, "-Infinity", 9), 9);
    }
    int len = 0;
    if (signbit(x)) out[len++] = '-';
    if (x == 0) return (int)(memcpy(out + len, "0.0", 3), len + 3);
    char buf[40], other[40];
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, sizeof buf, "%.*e", precision - 1, fabs(x));
        if (strtod(buf, NULL) == fabs(x)) break;
        /* The nearest `precision` digits miss it, but the neighbour on x's other side may
         * not: a tie printf broke to even, next to a power of two where the doubles'
         * spacing changes (2^-24 is 5.960464477539063e-08, not ...062e-08). */
        neighbour(buf, strtod(buf, NULL) < fabs(x), other);
        if (strtod(other, NULL) == fabs(x)) {
            memcpy(buf, other, sizeof buf);
            break;
        }
    }
    /* buf: d[.ddd]e[+-]XX */
    char digits[20];
    int n = 0;
    const char *c = buf;
    for (; *c != 'e'; c++) {
        if (*c != '.') digits[n++] = *c;
    }
    while (n > 1 && digits[n - 1] == '0') n--;
    int decpt = atoi(c + 1) + 1; /* x = 0.d1d2... * 10^decpt */
    if (decpt <= (json ? -5 : -4) || decpt > 16) {
        out[len++] = digits[0];
        if (n > 1) {
            out[len++] = '.';
            memcpy(out + len, digits + 1, (size_t)n - 1);
            len += n - 1;
        }
        int e = decpt - 1;
        out[len++] = 'e';
        if (e < 0 || !json) out[len++] = e < 0 ? '-' : '+';
        if (e < 0) e = -e;
        if (e < 10 && !json) out[len++] = '0';
        len += int_text(e, out + len);
    } else if (decpt <= 0) {
        out[len++] = '0';
        out[len++] = '.';
        for (int i = 0; i < -decpt; i++) out[len++] = '0';
        memcpy(out + len, digits, (size_t)n);
        len += n;
    } else if (decpt >= n) {
        memcpy(out + len, digits, (size_t)n);
        len += n;
        for (int i = n; i < decpt; i++) out[len++] = '0';
        out[len++] = '.';
        out[len++] = '0';
    } else {
        memcpy(out + len, digits, (size_t)decpt);
        len += decpt;
        out[len++] = '.';
        memcpy(out + len, digits + decpt, (size_t)(n - decpt));
        len += n - decpt;
    }
    return len;
}

typedef struct {
    slice key, text;
} text_entry;

typedef struct {
    decoder *d;
    gx_otlp_status *st;
    int64_t max_records;
    key_value *kvs; /* the current record's attributes, in wire order */
    uint32_t n_kvs, kvs_cap;
    text_entry *resource; /* the current resource's attributes but service.name, as text */
    uint32_t n_resource, resource_cap;
    slice service;
    text_chunk *resource_text, *record_text;
    /* The first record C leaves to Python: from there the walk only checks and counts, so
     * that the caller knows the body parses and how many records it holds. */
    const uint8_t *fallback_at;
    int32_t at_resource, at_scope, at_record; /* the current record's indices */
    struct {
        uint8_t *data;
        size_t len, cap;
    } json; /* the JSON text of an array or key-value list being written */
} otlp_walk;

static int json_value(otlp_walk *w, const any_value *v, int depth);

/* A record otlp.py rejects: counted by reason, the first ones kept (where, which) for
 * Python to word; nothing of it is exported. Returns the record's end. */
static const uint8_t *reject(otlp_walk *w, int reason, const uint8_t *record,
                             const uint8_t *end) {
    gx_otlp_status *st = w->st;
    if (st->rejected < GX_OTLP_REJECTIONS_KEPT) {
        gx_otlp_rejection *x = &st->rejections[st->rejected];
        x->offset = record - w->d->body;
        x->length = end - record;
        x->resource = w->at_resource;
        x->scope = w->at_scope;
        x->record = w->at_record;
        x->reason = reason;
    }
    st->rejected++;
    st->rejected_by_reason[reason]++;
    return end;
}

/* Leaves this record, and so the body, to the Python mapping. Returns 0. */
static int fall_back(otlp_walk *w, const uint8_t *at) {
    if (!w->fallback_at) w->fallback_at = at;
    return 0;
}

/* After a helper returned 0: NULL on a real error, else (a fallback) the record's end. */
#define SKIP_RECORD(w, end) ((w)->d->error ? NULL : (end))

static const char BASE64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The text gravixd/core/otlp.py's any_value_text gives `v`; 0 for an ambiguous value
 * (a fallback: protobuf's merge is Python's to read) or out of memory. */
static int value_text(otlp_walk *w, text_chunk **text, const any_value *v, slice *out) {
    decoder *d = w->d;
    uint8_t *buf;
    switch (v->kind) {
    case ANY_STRING: *out = v->s; return 1;
    case ANY_BOOL:
        out->ptr = (const uint8_t *)(v->bits ? "true" : "false");
        out->len = v->bits ? 4 : 5;
        return 1;
    case ANY_INT:
        if (!(buf = text_alloc(d, text, 24))) return 0;
        out->ptr = buf;
        out->len = (uint32_t)int_text((int64_t)v->bits, (char *)buf);
        return 1;
    case ANY_DOUBLE: {
        double x;
        memcpy(&x, &v->bits, 8);
        if (!(buf = text_alloc(d, text, 32))) return 0;
        out->ptr = buf;
        out->len = (uint32_t)double_text(x, (char *)buf, 0);
        return 1;
    }
    case ANY_BYTES: {
        uint32_t n = v->s.len;
        const uint8_t *s = v->s.ptr;
        if (!(buf = text_alloc(d, text, ((size_t)n + 2) / 3 * 4 + 1))) return 0;
        uint32_t len = 0, i = 0;
        for (; i + 3 <= n; i += 3) {
            uint32_t word = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
            buf[len++] = BASE64[word >> 18];
            buf[len++] = BASE64[(word >> 12) & 63];
            buf[len++] = BASE64[(word >> 6) & 63];
            buf[len++] = BASE64[word & 63];
        }
        if (i < n) {
            uint32_t word = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
            buf[len++] = BASE64[word >> 18];
            buf[len++] = BASE64[(word >> 12) & 63];
            buf[len++] = i + 1 < n ? BASE64[(word >> 6) & 63] : '=';
            buf[len++] = '=';
        }
        out->ptr = buf;
        out->len = len;
        return 1;
    }
    case ANY_ARRAY:
    case ANY_KVLIST: {
        w->json.len = 0;
        if (!json_value(w, v, 3 * MAX_DEPTH)) return 0; /* nesting was checked */
        if (w->json.len >= (size_t)MAX_OFFSET) {
            fail(d, GX_ERR_TOO_LARGE, v->at);
            return 0;
        }
        if (!(buf = text_alloc(d, text, w->json.len))) return 0;
        memcpy(buf, w->json.data, w->json.len);
        out->ptr = buf;
        out->len = (uint32_t)w->json.len;
        return 1;
    }
    case ANY_AMBIGUOUS: return fall_back(w, v->at);
    default: /* no value, or a string_value_strindex: "" */
        out->ptr = v->at;
        out->len = 0;
        return 1;
    }
}

/* ---- JSON text of arrays and key-value lists, as otlp.py writes them (msgspec's encoder
 * over _any_value_native: lists, dicts keeping each key's first place and last value,
 * bytes in base64, NaN and infinities as strings, an empty value as null). */

static int json_put(otlp_walk *w, const void *bytes, size_t n) {
    if (!n) return 1;
    if (w->json.len + n > w->json.cap) {
        size_t cap = w->json.cap ? w->json.cap * 2 : 256;
        while (cap < w->json.len + n) cap *= 2;
        uint8_t *grown = realloc(w->json.data, cap);
        if (!grown) {
            fail(w->d, GX_ERR_NO_MEMORY, w->d->body);
            return 0;
        }
        w->json.data = grown;
        w->json.cap = cap;
    }
    memcpy(w->json.data + w->json.len, bytes, n);
    w->json.len += n;
    return 1;
}
#define JSON_PUT(w, literal) json_put((w), (literal), sizeof(literal) - 1)

/* A JSON string as msgspec writes it: ", \ and control characters escaped (\n, \t,
 * \b, \f, \r short, the others \u00xx), everything else (DEL, non-ASCII) as it is. */
static int json_string(otlp_walk *w, const uint8_t *s, uint32_t n) {
    static const char HEX[] = "0123456789abcdef";
    if (!JSON_PUT(w, "\"")) return 0;
    uint32_t run = 0; /* bytes copied as they are, pending */
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (!json_put(w, s + run, i - run)) return 0;
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\r': esc[1] = 'r'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = HEX[c >> 4];
            esc[5] = HEX[c & 15];
            len = 6;
        }
        if (!json_put(w, esc, len)) return 0;
    }
    return json_put(w, s + run, n - run) && JSON_PUT(w, "\"");
}

/* Most entries a key-value list may have for C to write it (keys are deduplicated by
 * comparing each with those before): past it, Python writes it. */
#define MAX_JSON_ENTRIES 64

static int json_value(otlp_walk *w, const any_value *v, int depth) {
    decoder *d = w->d;
    char number[32];
    if (depth < 1) return fall_back(w, v->at);
    switch (v->kind) {
    case ANY_STRING: return json_string(w, v->s.ptr, v->s.len);
    case ANY_BOOL: return v->bits ? JSON_PUT(w, "true") : JSON_PUT(w, "false");
    case ANY_INT: return json_put(w, number, (size_t)int_text((int64_t)v->bits, number));
    case ANY_DOUBLE: {
        double x;
        memcpy(&x, &v->bits, 8);
        int n = double_text(x, number, 1);
        if (isfinite(x)) return json_put(w, number, (size_t)n);
        return JSON_PUT(w, "\"") && json_put(w, number, (size_t)n) && JSON_PUT(w, "\"");
    }
    case ANY_BYTES: {
        slice text;
        if (!value_text(w, &w->record_text, v, &text)) return 0;
        return JSON_PUT(w, "\"") && json_put(w, text.ptr, text.len) && JSON_PUT(w, "\"");
    }
    case ANY_ARRAY: { /* ArrayValue: values 1 */
        const uint8_t *p = v->s.ptr, *end = v->s.ptr + v->s.len;
        int first = 1;
        if (!JSON_PUT(w, "[")) return 0;
        while (p < end) {
            const uint8_t *tag_at = p;
            uint32_t tag, len;
            if (!(p = read_tag(d, p, end, &tag))) return 0;
            if (tag != 0x0a) {
                if (!(p = skip_field(d, p, end, tag, tag_at, depth))) return 0;
                continue;
            }
            any_value item;
            if (!(p = read_length(d, p, end, &len)) ||
                !parse_any(d, p, p + len, depth - 1, &item))
                return 0;
            p += len;
            if ((!first && !JSON_PUT(w, ",")) || !json_value(w, &item, depth - 2)) return 0;
            first = 0;
        }
        return JSON_PUT(w, "]");
    }
    case ANY_KVLIST: { /* KeyValueList: values 1, each a KeyValue */
        key_value kvs[MAX_JSON_ENTRIES];
        uint32_t n = 0;
        const uint8_t *p = v->s.ptr, *end = v->s.ptr + v->s.len;
        while (p < end) {
            const uint8_t *tag_at = p;
            uint32_t tag, len;
            if (!(p = read_tag(d, p, end, &tag))) return 0;
            if (tag != 0x0a) {
                if (!(p = skip_field(d, p, end, tag, tag_at, depth))) return 0;
                continue;
            }
            if (n == MAX_JSON_ENTRIES) return fall_back(w, v->at);
            if (!(p = read_length(d, p, end, &len)) ||
                !parse_kv(d, p, p + len, depth - 1, &kvs[n]))
                return 0;
            p += len;
            n++;
        }
        if (!JSON_PUT(w, "{")) return 0;
        int first = 1;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t j, last = i;
            for (j = 0; j < i; j++) { /* written already, at its first place */
                if (kvs[j].key.len == kvs[i].key.len &&
                    !memcmp(kvs[j].key.ptr, kvs[i].key.ptr, kvs[i].key.len))
                    break;
            }
            if (j < i) continue;
            for (j = i + 1; j < n; j++) { /* its value is the last one's */
                if (kvs[j].key.len == kvs[i].key.len &&
                    !memcmp(kvs[j].key.ptr, kvs[i].key.ptr, kvs[i].key.len))
                    last = j;
            }
            if ((!first && !JSON_PUT(w, ",")) || !json_string(w, kvs[i].key.ptr, kvs[i].key.len) ||
                !JSON_PUT(w, ":") || !json_value(w, &kvs[last].value, depth - 3))
                return 0;
            first = 0;
        }
        return JSON_PUT(w, "}");
    }
    case ANY_AMBIGUOUS: return fall_back(w, v->at);
    default: return JSON_PUT(w, "null"); /* no value, a string_value_strindex */
    }
}

/* A whole number 0..maximum as otlp.py's _integer reads it (an int, a decimal string of
 * ASCII digits, an integral double); 0 for anything else (the record is rejected), or for
 * an ambiguous value (then a fallback: protobuf's merge is Python's to read). */
static int value_integer(otlp_walk *w, const any_value *v, uint64_t maximum, uint64_t *out) {
    if (v->kind == ANY_INT && (int64_t)v->bits >= 0 && v->bits <= maximum) {
        *out = v->bits;
        return 1;
    }
    if (v->kind == ANY_STRING && v->s.len) {
        uint64_t n = 0;
        for (uint32_t i = 0; i < v->s.len; i++) {
            uint8_t c = v->s.ptr[i];
            if (c < '0' || c > '9') goto reject;
            uint64_t digit = (uint64_t)(c - '0');
            if (n > (maximum - digit) / 10) goto reject; /* past maximum, before it wraps */
            n = n * 10 + digit;
        }
        *out = n;
        return 1;
    }
    if (v->kind == ANY_DOUBLE) {
        double x;
        memcpy(&x, &v->bits, 8);
        /* maximum + 1 is 1000 or 2^63, both exact as doubles */
        if (x >= 0 && x < (double)maximum + 1 && x == floor(x)) {
            *out = (uint64_t)x;
            return 1;
        }
    }
reject: /* Python's to word; a merged (ambiguous) value Python's to read */
    if (v->kind == ANY_AMBIGUOUS) fall_back(w, v->at);
    return 0;
}

/* ---- the walk --------------------------------------------------------------------------- */

static int grow_array(decoder *d, void **items, uint32_t *cap, size_t size) {
    uint32_t fresh = *cap ? *cap * 2 : 16;
    void *grown = realloc(*items, size * fresh);
    if (!grown) {
        fail(d, GX_ERR_NO_MEMORY, d->body);
        return 0;
    }
    *items = grown;
    *cap = fresh;
    return 1;
}

static const uint8_t *push_kv(otlp_walk *w, const uint8_t *p, const uint8_t *end, int depth) {
    if (w->n_kvs == w->kvs_cap &&
        !grow_array(w->d, (void **)&w->kvs, &w->kvs_cap, sizeof(key_value)))
        return NULL;
    uint32_t len;
    CHECK(read_length(w->d, p, end, &len));
    CHECK(parse_kv(w->d, p, p + len, depth, &w->kvs[w->n_kvs]));
    w->n_kvs++;
    return p;
}

static inline int slice_is(slice s, const char *text, uint32_t len) {
    return s.len == len && memcmp(s.ptr, text, len) == 0;
}
#define SLICE_IS(s, literal) slice_is((s), (literal), (uint32_t)(sizeof(literal) - 1))

static const uint8_t *const EMPTY = (const uint8_t *)"";

/* A Resource (attributes 1, entity_refs 3): its attributes appended to w->kvs. */
static const uint8_t *parse_resource(otlp_walk *w, const uint8_t *p, const uint8_t *end,
                                     int depth) {
    decoder *d = w->d;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag, len;
        CHECK(read_tag(d, p, end, &tag));
        if (tag == 0x0a) {
            CHECK(push_kv(w, p, end, depth - 1));
        } else if (tag == 0x1a) {
            CHECK(read_length(d, p, end, &len));
            if (!validate(d, V_ENTITY, p, p + len, depth - 1)) return NULL;
            p += len;
        } else {
            CHECK(skip_field(d, p, end, tag, tag_at, depth));
        }
    }
    return p;
}

/* The resource of a ResourceSpans/ResourceLogs (field 1, merged when repeated): w->service
 * and w->resource, as otlp.py's _resource_attributes. */
static const uint8_t *read_resource(otlp_walk *w, const uint8_t *p, const uint8_t *end,
                                    int depth) {
    decoder *d = w->d;
    w->n_kvs = 0;
    w->n_resource = 0;
    text_reset(&w->resource_text);
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag, len;
        CHECK(read_tag(d, p, end, &tag));
        if (tag == 0x0a) {
            CHECK(read_length(d, p, end, &len));
            if (!parse_resource(w, p, p + len, depth - 1)) return NULL;
            p += len;
        } else if (tag == 0x1a) { /* schema_url */
            slice ignored;
            CHECK(read_string(d, p, end, &ignored));
        } else { /* scope_spans / scope_logs (field 2) are walked next */
            CHECK(skip_field(d, p, end, tag, tag_at, depth));
        }
    }
    const any_value *name = NULL;
    for (uint32_t i = 0; i < w->n_kvs; i++) {
        key_value *kv = &w->kvs[i];
        if (SLICE_IS(kv->key, "service.name")) {
            name = &kv->value; /* the last one, as a dict keeps it */
            continue;
        }
        if (w->n_resource == w->resource_cap &&
            !grow_array(d, (void **)&w->resource, &w->resource_cap, sizeof(text_entry)))
            return NULL;
        text_entry *e = &w->resource[w->n_resource++];
        e->key = kv->key;
        if (!value_text(w, &w->resource_text, &kv->value, &e->text) && d->error) return NULL;
    }
    w->service.len = 0;
    if (name && !value_text(w, &w->resource_text, name, &w->service) && d->error) return NULL;
    if (!w->service.len) {
        w->service.ptr = (const uint8_t *)"unknown_service";
        w->service.len = 15;
    }
    return p;
}

/* The map entries of a record: the resource's, then `own` (later ones win). */
static int push_resource_entries(otlp_walk *w) {
    w->d->n_entries = 0;
    for (uint32_t i = 0; i < w->n_resource; i++) {
        if (!push_entry(w->d, w->resource[i].key, w->resource[i].text)) return 0;
    }
    return 1;
}

static void hex16(const uint8_t *id, char *out) {
    static const char HEX[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = HEX[id[i] >> 4];
        out[2 * i + 1] = HEX[id[i] & 15];
    }
}

/* Semantic-convention keys read into fact columns, current name first (rank 0), then the
 * older one it replaced: otlp.py's _COLUMN_KEYS. Every key listed is kept out of the map. */
enum { COL_ROUTE, COL_METHOD, COL_STATUS, COL_BYTES_IN, COL_BYTES_OUT, N_COLUMN_SLOTS };
static const struct {
    const char *key;
    uint8_t len, slot, rank;
} SPAN_COLUMN_KEYS[] = {
#define K(key, slot, rank) {key, (uint8_t)(sizeof(key) - 1), slot, rank}
    K("http.route", COL_ROUTE, 0),
    K("http.request.method", COL_METHOD, 0),
    K("http.method", COL_METHOD, 1),
    K("http.response.status_code", COL_STATUS, 0),
    K("http.status_code", COL_STATUS, 1),
    K("http.request.body.size", COL_BYTES_IN, 0),
    K("http.request_content_length", COL_BYTES_IN, 1),
    K("http.response.body.size", COL_BYTES_OUT, 0),
    K("http.response_content_length", COL_BYTES_OUT, 1),
#undef K
};

static int column_key(slice key, int *slot, int *rank) {
    if (key.len < 10 || key.ptr[0] != 'h') return 0; /* every one starts "http." */
    for (size_t i = 0; i < sizeof SPAN_COLUMN_KEYS / sizeof *SPAN_COLUMN_KEYS; i++) {
        if (slice_is(key, SPAN_COLUMN_KEYS[i].key, SPAN_COLUMN_KEYS[i].len)) {
            *slot = SPAN_COLUMN_KEYS[i].slot;
            *rank = SPAN_COLUMN_KEYS[i].rank;
            return 1;
        }
    }
    return 0;
}

static int grow_row(otlp_walk *w, const row_buffer *bufs, size_t n) {
    decoder *d = w->d;
    return d->r->rows < d->row_cap || grow_rows(d, bufs, n, d->row_cap * 2);
}

/* A Span: one fact when it is a SERVER span, else counted by kind. */
static const uint8_t *parse_span(otlp_walk *w, const uint8_t *p, const uint8_t *end,
                                 int depth) {
    decoder *d = w->d;
    const uint8_t *span_at = p;
    slice trace_id = {EMPTY, 0}, name = {EMPTY, 0}, ignored;
    int32_t kind = 0;
    uint64_t start = 0, finish_ns = 0, v;
    uint32_t len;
    w->n_kvs = 0;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        CHECK(read_tag(d, p, end, &tag));
        switch (tag) {
        case 0x0a: /* trace_id: bytes */
            CHECK(read_length(d, p, end, &len));
            trace_id.ptr = p;
            trace_id.len = len;
            p += len;
            break;
        case 0x1a: CHECK(read_string(d, p, end, &ignored)); break; /* trace_state */
        case 0x2a: CHECK(read_string(d, p, end, &name)); break;
        case 0x30: CHECK(read_varint(d, p, end, &v)); kind = (int32_t)(uint32_t)v; break;
        case 0x39:
        case 0x41:
            if (end - p < 8) return fail(d, GX_ERR_TRUNCATED_FIXED, p);
            *(tag == 0x39 ? &start : &finish_ns) = load64(p);
            p += 8;
            break;
        case 0x4a: CHECK(push_kv(w, p, end, depth - 1)); break;
        case 0x5a:
        case 0x6a:
        case 0x7a: /* events, links, status */
            CHECK(read_length(d, p, end, &len));
            if (!validate(d, tag == 0x5a ? V_EVENT : tag == 0x6a ? V_LINK : V_STATUS, p, p + len,
                          depth - 1))
                return NULL;
            p += len;
            break;
        default: CHECK(skip_field(d, p, end, tag, tag_at, depth)); break;
        }
    }
    if (w->fallback_at) return p; /* only checked and counted from now on */
    if (kind != 2) {
        w->st->ignored_by_kind[kind >= 0 && kind < GX_SPAN_KINDS - 1 ? kind : GX_SPAN_KINDS - 1]++;
        return p;
    }
    /* otlp.py's checks, in its order; Python words the first rejections. */
    int nonzero = 0;
    for (uint32_t i = 0; i < trace_id.len && trace_id.len == 16; i++) nonzero |= trace_id.ptr[i];
    if (trace_id.len != 16 || !nonzero) return reject(w, GX_REJECT_TRACE_ID, span_at, p);
    if (start == 0 || start > (uint64_t)INT64_MAX || finish_ns < start)
        return reject(w, GX_REJECT_TIME, span_at, p);

    const any_value *found[N_COLUMN_SLOTS] = {0};
    int ranks[N_COLUMN_SLOTS] = {2, 2, 2, 2, 2};
    text_reset(&w->record_text);
    if (!push_resource_entries(w)) return NULL;
    for (uint32_t i = 0; i < w->n_kvs; i++) {
        key_value *kv = &w->kvs[i];
        int slot, rank;
        if (column_key(kv->key, &slot, &rank)) {
            if (rank <= ranks[slot]) { /* a later duplicate of a key wins */
                found[slot] = &kv->value;
                ranks[slot] = rank;
            }
            continue;
        }
        slice text;
        if (!value_text(w, &w->record_text, &kv->value, &text)) return SKIP_RECORD(w, p);
        if (!push_entry(d, kv->key, text)) return NULL;
    }
    /* A value that is no integer in range rejects the span; an ambiguous one is Python's. */
    uint64_t status = 0, bytes_in = 0, bytes_out = 0;
    if (found[COL_STATUS] && !value_integer(w, found[COL_STATUS], 999, &status))
        return w->fallback_at ? p : reject(w, GX_REJECT_STATUS_CODE, span_at, p);
    if (found[COL_BYTES_IN] && !value_integer(w, found[COL_BYTES_IN], INT64_MAX, &bytes_in))
        return w->fallback_at ? p : reject(w, GX_REJECT_BYTES_IN, span_at, p);
    if (found[COL_BYTES_OUT] && !value_integer(w, found[COL_BYTES_OUT], INT64_MAX, &bytes_out))
        return w->fallback_at ? p : reject(w, GX_REJECT_BYTES_OUT, span_at, p);
    slice route = name, method = {EMPTY, 0};
    if ((found[COL_ROUTE] && !value_text(w, &w->record_text, found[COL_ROUTE], &route)) ||
        (found[COL_METHOD] && !value_text(w, &w->record_text, found[COL_METHOD], &method)))
        return SKIP_RECORD(w, p);

    if (!grow_row(w, FACT_ROW_BUFFERS, sizeof FACT_ROW_BUFFERS / sizeof *FACT_ROW_BUFFERS))
        return NULL;
    gx_result *r = d->r;
    gx_buffer *b = r->buffers;
    char hex[32];
    hex16(trace_id.ptr, hex);
    double duration_ms = (double)(finish_ns - start) / 1e6;
    put_i64(&b[GX_F_TIMESTAMP], (int64_t)start);
    if (!put_string(d, &b[GX_F_SERVICE_OFFSETS], &b[GX_F_SERVICE_DATA], w->service.ptr,
                    w->service.len) ||
        !put_string(d, &b[GX_F_ROUTE_OFFSETS], &b[GX_F_ROUTE_DATA], route.ptr, route.len) ||
        !put_string(d, &b[GX_F_METHOD_OFFSETS], &b[GX_F_METHOD_DATA], method.ptr, method.len) ||
        !put_string(d, &b[GX_F_TRACE_ID_OFFSETS], &b[GX_F_TRACE_ID_DATA], (const uint8_t *)hex,
                    32))
        return NULL;
    put_i32(&b[GX_F_STATUS_CODE], (int32_t)status);
    memcpy(b[GX_F_DURATION_MS].data + b[GX_F_DURATION_MS].len, &duration_ms, 8);
    b[GX_F_DURATION_MS].len += 8;
    put_i64(&b[GX_F_BYTES_IN], (int64_t)bytes_in);
    put_i64(&b[GX_F_BYTES_OUT], (int64_t)bytes_out);
    if (!put_entries(d, GX_F_ATTR_OFFSETS, GX_F_ATTR_KEY_OFFSETS, GX_F_ATTR_KEY_DATA,
                     GX_F_ATTR_VALUE_OFFSETS, GX_F_ATTR_VALUE_DATA))
        return NULL;
    r->rows++;
    return p;
}

/* OpenTelemetry's SeverityNumber 1..24, four a level (TRACE is DEBUG): otlp.py's table. */
static const char *const OTEL_SEVERITY[25] = {
    "UNSPECIFIED", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "DEBUG",
    "INFO",        "INFO",  "INFO",  "INFO",  "WARN",  "WARN",  "WARN",  "WARN",  "ERROR",
    "ERROR",       "ERROR", "ERROR", "FATAL", "FATAL", "FATAL", "FATAL",
};
static const char *const STORED_SEVERITY[] = {"UNSPECIFIED", "DEBUG", "INFO",
                                              "WARN",        "ERROR", "FATAL"};

/* Severity names (lowercase, without SEVERITY_) -> number: gravixd/schema.py's
 * SEVERITY_ALIASES, registered by gravixd/native.py at import (one table, not a copy). */
#define MAX_ALIASES 64
#define MAX_ALIAS_BYTES 24
static char alias_names[MAX_ALIASES][MAX_ALIAS_BYTES];
static int alias_numbers[MAX_ALIASES];
static int n_aliases;

int gx_otlp_severity_alias(const char *name, int number) {
    size_t n = strlen(name);
    if (n >= MAX_ALIAS_BYTES || number < 0 || number > 5) return 0;
    for (int i = 0; i < n_aliases; i++) { /* registered again (a module reloaded): update */
        if (strcmp(alias_names[i], name) == 0) {
            alias_numbers[i] = number;
            return 1;
        }
    }
    if (n_aliases == MAX_ALIASES) return 0;
    memcpy(alias_names[n_aliases], name, n + 1);
    alias_numbers[n_aliases++] = number;
    return 1;
}

static int is_space(uint8_t c) { /* str.isspace() of ASCII */
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* otlp.py's log_severity; GX_ERR_FALLBACK for text outside ASCII (Unicode case and spaces
 * are Python's to judge). */
static int log_severity(otlp_walk *w, int32_t number, slice text, const char **out) {
    if (number > 0 && number < 25) {
        *out = OTEL_SEVERITY[number];
        return 1;
    }
    *out = "UNSPECIFIED";
    if (!text.len) return 1;
    const uint8_t *s = text.ptr, *e = text.ptr + text.len;
    for (const uint8_t *c = s; c < e; c++) {
        if (*c >= 0x80) return fall_back(w, text.ptr);
    }
    while (s < e && is_space(*s)) s++;
    while (e > s && is_space(e[-1])) e--;
    char lower[MAX_ALIAS_BYTES + 9];
    size_t n = (size_t)(e - s);
    if (n >= sizeof lower) return 1; /* longer than any name */
    for (size_t i = 0; i < n; i++) lower[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    lower[n] = 0;
    const char *name = strncmp(lower, "severity_", 9) == 0 ? lower + 9 : lower;
    for (int i = 0; i < n_aliases; i++) {
        if (strcmp(alias_names[i], name) == 0) {
            *out = STORED_SEVERITY[alias_numbers[i]];
            return 1;
        }
    }
    return 1;
}

/* A LogRecord: one event. */
static const uint8_t *parse_log(otlp_walk *w, const uint8_t *p, const uint8_t *end,
                                int depth) {
    decoder *d = w->d;
    const uint8_t *record_at = p;
    slice trace_id = {EMPTY, 0}, severity_text = {EMPTY, 0}, event_name = {EMPTY, 0};
    int32_t severity_number = 0;
    uint64_t time = 0, observed = 0, v;
    uint32_t len;
    any_value body = {0};
    int bodies = 0;
    w->n_kvs = 0;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        CHECK(read_tag(d, p, end, &tag));
        switch (tag) {
        case 0x09:
        case 0x59:
            if (end - p < 8) return fail(d, GX_ERR_TRUNCATED_FIXED, p);
            *(tag == 0x09 ? &time : &observed) = load64(p);
            p += 8;
            break;
        case 0x10: CHECK(read_varint(d, p, end, &v)); severity_number = (int32_t)(uint32_t)v; break;
        case 0x1a: CHECK(read_string(d, p, end, &severity_text)); break;
        case 0x2a:
            CHECK(read_length(d, p, end, &len));
            CHECK(parse_any(d, p, p + len, depth - 1, &body));
            bodies++;
            break;
        case 0x32: CHECK(push_kv(w, p, end, depth - 1)); break;
        case 0x4a: /* trace_id: bytes */
            CHECK(read_length(d, p, end, &len));
            trace_id.ptr = p;
            trace_id.len = len;
            p += len;
            break;
        case 0x62: CHECK(read_string(d, p, end, &event_name)); break;
        default: CHECK(skip_field(d, p, end, tag, tag_at, depth)); break;
        }
    }
    if (w->fallback_at) return p; /* only checked and counted from now on */
    if (bodies > 1) body.kind = ANY_AMBIGUOUS;
    uint64_t t = time ? time : observed;
    if (trace_id.len != 16 && trace_id.len != 0)
        return reject(w, GX_REJECT_TRACE_ID, record_at, p);
    if (t > (uint64_t)INT64_MAX) return reject(w, GX_REJECT_TIME, record_at, p);

    text_reset(&w->record_text);
    if (!push_resource_entries(w)) return NULL;
    slice kind = {EMPTY, 0}, message = {EMPTY, 0};
    for (uint32_t i = 0; i < w->n_kvs; i++) {
        key_value *kv = &w->kvs[i];
        slice text;
        if (!value_text(w, &w->record_text, &kv->value, &text)) return SKIP_RECORD(w, p);
        if (SLICE_IS(kv->key, "event.name")) {
            kind = text; /* the last one; never in the map */
        } else if (!push_entry(d, kv->key, text)) {
            return NULL;
        }
    }
    if (event_name.len) kind = event_name;
    if (!kind.len) {
        kind.ptr = (const uint8_t *)"log";
        kind.len = 3;
    }
    const char *severity;
    if ((bodies && !value_text(w, &w->record_text, &body, &message)) ||
        !log_severity(w, severity_number, severity_text, &severity))
        return SKIP_RECORD(w, p);

    if (!grow_row(w, EVENT_ROW_BUFFERS, sizeof EVENT_ROW_BUFFERS / sizeof *EVENT_ROW_BUFFERS))
        return NULL;
    gx_result *r = d->r;
    gx_buffer *b = r->buffers;
    char hex[32];
    if (trace_id.len) hex16(trace_id.ptr, hex);
    put_i64(&b[GX_E_TIMESTAMP], t ? (int64_t)t : d->received_unix_nano);
    if (!put_string(d, &b[GX_E_SERVICE_OFFSETS], &b[GX_E_SERVICE_DATA], w->service.ptr,
                    w->service.len) ||
        !put_string(d, &b[GX_E_KIND_OFFSETS], &b[GX_E_KIND_DATA], kind.ptr, kind.len) ||
        !put_string(d, &b[GX_E_SEVERITY_OFFSETS], &b[GX_E_SEVERITY_DATA],
                    (const uint8_t *)severity, (uint32_t)strlen(severity)) ||
        !put_string(d, &b[GX_E_MESSAGE_OFFSETS], &b[GX_E_MESSAGE_DATA], message.ptr,
                    message.len) ||
        !put_string(d, &b[GX_E_TRACE_ID_OFFSETS], &b[GX_E_TRACE_ID_DATA], (const uint8_t *)hex,
                    trace_id.len ? 32 : 0))
        return NULL;
    if (!put_entries(d, GX_E_ATTR_OFFSETS, GX_E_ATTR_KEY_OFFSETS, GX_E_ATTR_KEY_DATA,
                     GX_E_ATTR_VALUE_OFFSETS, GX_E_ATTR_VALUE_DATA))
        return NULL;
    r->rows++;
    return p;
}

/* A ScopeSpans / ScopeLogs: scope 1, records 2, schema_url 3. */
static const uint8_t *parse_scope(otlp_walk *w, int logs, const uint8_t *p, const uint8_t *end,
                                  int depth) {
    decoder *d = w->d;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag, len;
        CHECK(read_tag(d, p, end, &tag));
        if (tag == 0x12) {
            /* Counted before it costs anything: a body of empty records is a few bytes
             * each on the wire, a row each here. */
            if (++w->st->records > w->max_records) return fail(d, GX_ERR_TOO_MANY_RECORDS, tag_at);
            CHECK(read_length(d, p, end, &len));
            if (!(logs ? parse_log : parse_span)(w, p, p + len, depth - 1)) return NULL;
            w->at_record++;
            p += len;
        } else if (tag == 0x0a) {
            CHECK(read_length(d, p, end, &len));
            if (!validate(d, V_SCOPE, p, p + len, depth - 1)) return NULL;
            p += len;
        } else if (tag == 0x1a) {
            slice ignored;
            CHECK(read_string(d, p, end, &ignored));
        } else {
            CHECK(skip_field(d, p, end, tag, tag_at, depth));
        }
    }
    return p;
}

/* A ResourceSpans / ResourceLogs: the resource first (wherever it is), then its scopes. */
static const uint8_t *parse_resource_records(otlp_walk *w, int logs, const uint8_t *p,
                                             const uint8_t *end, int depth) {
    decoder *d = w->d;
    if (!read_resource(w, p, end, depth)) return NULL;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag, len;
        CHECK(read_tag(d, p, end, &tag));
        if (tag == 0x12) {
            CHECK(read_length(d, p, end, &len));
            w->at_record = 0;
            if (!parse_scope(w, logs, p, p + len, depth - 1)) return NULL;
            w->at_scope++;
            p += len;
        } else {
            CHECK(skip_field(d, p, end, tag, tag_at, depth)); /* read_resource checked it */
        }
    }
    return p;
}

int gx_decode_otlp_arrow(int signal, const uint8_t *body, size_t len,
                         int64_t received_unix_nano, int64_t max_records,
                         gx_otlp_status *status, struct ArrowArray *out) {
    memset(status, 0, sizeof *status);
    out->release = NULL;
    int logs = signal == GX_OTLP_LOGS;
    const stream_spec *s = &SPECS[logs];
    gx_result *r = gx_result_new();
    if (!r) return status->error = GX_ERR_NO_MEMORY;
    decoder d;
    otlp_walk w = {0};
    w.d = &d;
    w.st = status;
    w.max_records = max_records;
    if (begin(&d, s, body, len, received_unix_nano, r)) {
        const uint8_t *p = body, *end = body + len;
        while (p < end) {
            const uint8_t *tag_at = p;
            uint32_t tag, item_len;
            if (!(p = read_tag(&d, p, end, &tag))) break;
            if (tag == 0x0a) { /* resource_spans / resource_logs */
                if (!(p = read_length(&d, p, end, &item_len))) break;
                w.at_scope = 0;
                if (!parse_resource_records(&w, logs, p, p + item_len, MAX_DEPTH - 1)) break;
                w.at_resource++;
                p += item_len;
            } else if (!(p = skip_field(&d, p, end, tag, tag_at, MAX_DEPTH))) {
                break;
            }
        }
    }
    free(w.kvs);
    free(w.resource);
    free(w.json.data);
    text_free(&w.resource_text);
    text_free(&w.record_text);
    if (!d.error && w.fallback_at) fail(&d, GX_ERR_FALLBACK, w.fallback_at);
    int code = finish(&d, s, body);
    status->error_offset = r->error_offset;
    if (code) {
        gx_result_free(r);
        return status->error = code;
    }
    status->rows = r->rows;
    if ((code = export_result(s, r, out))) gx_result_free(r);
    return status->error = code;
}
