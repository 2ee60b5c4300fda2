/* gravix_decode.c - RequestFactBatch / ServiceEventBatch protobuf bytes -> Arrow buffers.
 *
 * One pass over the body: each RequestFact/ServiceEvent is parsed into slices of the body
 * (proto3: the last value of a field wins), then appended to the column buffers: int64/int32/
 * double data, int32 offsets + UTF-8 data for strings, and for the attributes map the entry
 * offsets plus key and value string columns, entries sorted by key with unique keys (the
 * canonical form of gravixd/schema.py).
 *
 * It must accept exactly what upb accepts (tests/property/test_native_differential.py holds
 * it to that), so its corner cases copy upb's, found empirically with protobuf 7.x:
 *   - a known field with the wrong wire type is an unknown field, skipped; unlike upb, the
 *     first one is recorded (wrong_wire_*) and the body refused: it is another message;
 *   - tags are at most 5 bytes and 32 bits; field number 0 is malformed at message level but
 *     tolerated inside an unknown group; wire types 6 and 7 are malformed;
 *   - lengths are at most 5 bytes and < 2^31; other varints at most 10 bytes, bits above
 *     64 dropped; uint32 and enum fields keep the low 32 bits;
 *   - submessages and groups together nest at most 100 deep (the batch is level 0);
 *   - string fields must be valid UTF-8 (each occurrence, even one later overwritten);
 *   - a map entry holding any unknown field is left out of the map.
 * It must never read outside [body, body + len) nor crash: every read is bounds checked,
 * and it is fuzzed under ASan/UBSan (native/fuzz_decode.c).
 */
#include "gravix_decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gravix_decode.c reads fixed64 doubles as little-endian"
#endif

_Static_assert(GX_F_COUNT <= GX_MAX_BUFFERS && GX_E_COUNT <= GX_MAX_BUFFERS, "buffer slots");
_Static_assert(GX_MAX_BUFFERS == 18, "keep gx_result.buffers[18] in step");
/* The parsers' in-order fast path compares one byte: every column's field is 1..15. */
#define ONE_BYTE_TAG(P, C, name, format, kind, width, number, wire) \
    _Static_assert(GX_TAG_##P##_##C < 0x80, "a one-byte tag: " name);
GX_FACT_COLUMNS(ONE_BYTE_TAG)
GX_EVENT_COLUMNS(ONE_BYTE_TAG)

/* upb's default recursion limit: the batch is depth 100, each message or group one less. */
#define MAX_DEPTH 100
#define MAX_OFFSET 0x7fffffffLL
#define LOCAL_ENTRIES 32

typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} slice;

typedef struct {
    slice key;
    slice value;
    uint32_t seq; /* wire order: the last of equal keys wins */
} entry;

typedef struct {
    const uint8_t *body;
    gx_result *r;
    int error;
    const uint8_t *error_at;
    int64_t received_unix_nano;
    int64_t row_cap;   /* rows every per-row buffer has room for */
    int64_t entry_cap; /* map entries the entry offset buffers have room for */
    entry *entries;    /* the current message's map entries */
    uint32_t n_entries, entries_cap;
    entry local_entries[LOCAL_ENTRIES];
} decoder;

static const uint8_t *fail(decoder *d, int code, const uint8_t *at) {
    if (!d->error) {
        d->error = code;
        d->error_at = at;
    }
    return NULL;
}

/* ---- wire primitives ------------------------------------------------------------------ */

static inline const uint8_t *read_varint(decoder *d, const uint8_t *p, const uint8_t *end,
                                         uint64_t *out) {
    if (p < end && *p < 0x80) {
        *out = *p;
        return p + 1;
    }
    const uint8_t *start = p;
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) return fail(d, GX_ERR_TRUNCATED_VARINT, start);
        uint8_t byte = *p++;
        value |= (uint64_t)(byte & 0x7f) << (7 * i); /* bits past 64 drop, as upb */
        if (byte < 0x80) {
            *out = value;
            return p;
        }
    }
    return fail(d, GX_ERR_VARINT_TOO_LONG, start);
}

/* A tag: at most 5 bytes and 32 bits. Caller guarantees p < end. */
static inline const uint8_t *read_tag(decoder *d, const uint8_t *p, const uint8_t *end,
                                      uint32_t *out) {
    if (*p < 0x80) {
        *out = *p;
        return p + 1;
    }
    const uint8_t *start = p;
    uint32_t value = 0;
    for (int i = 0; i < 5; i++) {
        if (p >= end) return fail(d, GX_ERR_TRUNCATED_VARINT, start);
        uint8_t byte = *p++;
        if (i == 4) {
            if (byte > 0x0f) return fail(d, GX_ERR_BAD_TAG, start);
            *out = value | ((uint32_t)byte << 28);
            return p;
        }
        value |= (uint32_t)(byte & 0x7f) << (7 * i);
        if (byte < 0x80) {
            *out = value;
            return p;
        }
    }
    return fail(d, GX_ERR_BAD_TAG, start); /* unreachable */
}

/* A length prefix: at most 5 bytes, < 2^31 - 1, and within [p, end). */
static inline const uint8_t *read_length(decoder *d, const uint8_t *p, const uint8_t *end,
                                         uint32_t *out) {
    const uint8_t *start = p;
    uint64_t value;
    if (p < end && *p < 0x80) {
        value = *p++;
    } else {
        value = 0;
        for (int i = 0;; i++) {
            if (i == 5) return fail(d, GX_ERR_BAD_LENGTH, start);
            if (p >= end) return fail(d, GX_ERR_TRUNCATED_VARINT, start);
            uint8_t byte = *p++;
            value |= (uint64_t)(byte & 0x7f) << (7 * i);
            if (byte < 0x80) break;
        }
        if (value >= MAX_OFFSET) return fail(d, GX_ERR_BAD_LENGTH, start);
    }
    if (value > (uint64_t)(end - p)) return fail(d, GX_ERR_LENGTH_PAST_END, start);
    *out = (uint32_t)value;
    return p;
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Whether s[0..n) is all ASCII, the common case: whole words, the tail as one overlapping
 * load, no branch per byte. */
static inline int ascii_only(const uint8_t *s, size_t n) {
    uint64_t acc = 0;
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8) acc |= load64(s + i);
        acc |= load64(s + n - 8);
    } else if (n >= 4) {
        acc = load32(s) | load32(s + n - 4);
    } else {
        for (size_t i = 0; i < n; i++) acc |= s[i];
    }
    return !(acc & 0x8080808080808080ULL);
}

static int utf8_valid_slow(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (!(word & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c < 0xc2) {
            return 0; /* continuation byte or overlong 2-byte lead */
        } else if (c < 0xe0) {
            if (n - i < 2 || (s[i + 1] & 0xc0) != 0x80) return 0;
            i += 2;
        } else if (c < 0xf0) {
            if (n - i < 3) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2];
            if ((c1 & 0xc0) != 0x80 || (c2 & 0xc0) != 0x80) return 0;
            if (c == 0xe0 && c1 < 0xa0) return 0; /* overlong */
            if (c == 0xed && c1 > 0x9f) return 0; /* surrogate */
            i += 3;
        } else if (c < 0xf5) {
            if (n - i < 4) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
            if ((c1 & 0xc0) != 0x80 || (c2 & 0xc0) != 0x80 || (c3 & 0xc0) != 0x80) return 0;
            if (c == 0xf0 && c1 < 0x90) return 0; /* overlong */
            if (c == 0xf4 && c1 > 0x8f) return 0; /* above U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static inline const uint8_t *read_string(decoder *d, const uint8_t *p, const uint8_t *end,
                                         slice *out) {
    const uint8_t *start = p;
    uint32_t len;
    p = read_length(d, p, end, &len);
    if (!p) return NULL;
    if (!ascii_only(p, len) && !utf8_valid_slow(p, len)) return fail(d, GX_ERR_INVALID_UTF8, start);
    out->ptr = p;
    out->len = len;
    return p + len;
}

static const uint8_t *skip_group(decoder *d, const uint8_t *p, const uint8_t *end,
                                 uint32_t start_tag, const uint8_t *start, int depth);

/* The value of a field whose tag was just read, skipped by its wire type. */
static const uint8_t *skip_value(decoder *d, const uint8_t *p, const uint8_t *end,
                                 uint32_t tag, const uint8_t *tag_at, int depth) {
    uint64_t ignored;
    uint32_t len;
    switch (tag & 7) {
    case 0:
        return read_varint(d, p, end, &ignored);
    case 1:
        if (end - p < 8) return fail(d, GX_ERR_TRUNCATED_FIXED, p);
        return p + 8;
    case 2:
        p = read_length(d, p, end, &len);
        return p ? p + len : NULL;
    case 3:
        return skip_group(d, p, end, tag, tag_at, depth - 1);
    case 4:
        return fail(d, GX_ERR_UNEXPECTED_END_GROUP, tag_at);
    case 5:
        if (end - p < 4) return fail(d, GX_ERR_TRUNCATED_FIXED, p);
        return p + 4;
    default:
        return fail(d, GX_ERR_BAD_WIRE_TYPE, tag_at);
    }
}

/* An unknown field of a message (not inside a group): field number 0 is malformed there. */
static inline const uint8_t *skip_field(decoder *d, const uint8_t *p, const uint8_t *end,
                                        uint32_t tag, const uint8_t *tag_at, int depth) {
    if ((tag >> 3) == 0) return fail(d, GX_ERR_BAD_TAG, tag_at);
    return skip_value(d, p, end, tag, tag_at, depth);
}

static const uint8_t *skip_group(decoder *d, const uint8_t *p, const uint8_t *end,
                                 uint32_t start_tag, const uint8_t *start, int depth) {
    if (depth < 0) return fail(d, GX_ERR_TOO_DEEP, start);
    uint32_t end_tag = (start_tag & ~7u) | 4;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        p = read_tag(d, p, end, &tag);
        if (!p) return NULL;
        if (tag == end_tag) return p;
        p = skip_value(d, p, end, tag, tag_at, depth);
        if (!p) return NULL;
    }
    return fail(d, GX_ERR_UNTERMINATED_GROUP, start);
}

/* ---- output buffers ------------------------------------------------------------------- */

static int reserve(decoder *d, gx_buffer *b, int64_t needed) {
    if (needed <= b->cap) return 1;
    int64_t cap = b->cap * 2;
    if (cap < needed) cap = needed;
    if (cap < 64) cap = 64;
    uint8_t *data = realloc(b->data, (size_t)cap);
    if (!data) {
        fail(d, GX_ERR_NO_MEMORY, d->body);
        return 0;
    }
    b->data = data;
    b->cap = cap;
    return 1;
}

/* Per-row buffers of a stream and the bytes each row takes in them. */
typedef struct {
    int slot;
    int width;
} row_buffer;

#define ROW_BUFFER_FIXED(P, C, width) {GX_##P##_##C, width},
#define ROW_BUFFER_STRING(P, C, width) {GX_##P##_##C##_OFFSETS, 4},
#define ROW_BUFFER_MAP(P, C, width) {GX_##P##_##C##_OFFSETS, 4},
#define ROW_BUFFER(P, C, name, format, kind, width, number, wire) ROW_BUFFER_##kind(P, C, width)
static const row_buffer FACT_ROW_BUFFERS[] = {GX_FACT_COLUMNS(ROW_BUFFER)};
static const row_buffer EVENT_ROW_BUFFERS[] = {GX_EVENT_COLUMNS(ROW_BUFFER)};
_Static_assert(sizeof FACT_ROW_BUFFERS / sizeof *FACT_ROW_BUFFERS == GX_F_COLUMNS, "facts");
_Static_assert(sizeof EVENT_ROW_BUFFERS / sizeof *EVENT_ROW_BUFFERS == GX_E_COLUMNS, "events");

/* Offsets buffers hold rows + 1 entries, hence the one extra row everywhere. */
static int grow_rows(decoder *d, const row_buffer *bufs, size_t n, int64_t rows) {
    for (size_t i = 0; i < n; i++) {
        if (!reserve(d, &d->r->buffers[bufs[i].slot], (rows + 1) * bufs[i].width)) return 0;
    }
    d->row_cap = rows;
    return 1;
}

static int grow_entries(decoder *d, int key_slot, int value_slot, int64_t entries) {
    if (!reserve(d, &d->r->buffers[key_slot], (entries + 1) * 4)) return 0;
    if (!reserve(d, &d->r->buffers[value_slot], (entries + 1) * 4)) return 0;
    d->entry_cap = entries;
    return 1;
}

static inline void put_i32(gx_buffer *b, int32_t v) {
    memcpy(b->data + b->len, &v, 4);
    b->len += 4;
}
static inline void put_i64(gx_buffer *b, int64_t v) {
    memcpy(b->data + b->len, &v, 8);
    b->len += 8;
}

/* Appends a string to a column: its bytes to `data`, its end offset to `offsets` (which the
 * caller has room for). */
static inline int put_string(decoder *d, gx_buffer *offsets, gx_buffer *data, const uint8_t *s,
                             uint32_t n) {
    int64_t end = data->len + n;
    if (end > MAX_OFFSET) {
        fail(d, GX_ERR_TOO_LARGE, d->body);
        return 0;
    }
    if (n) {
        if (end > data->cap && !reserve(d, data, end)) return 0;
        memcpy(data->data + data->len, s, n);
        data->len = end;
    }
    put_i32(offsets, (int32_t)end);
    return 1;
}

/* ---- map entries ---------------------------------------------------------------------- */

static int push_entry(decoder *d, slice key, slice value) {
    if (d->n_entries == d->entries_cap) {
        uint32_t cap = d->entries_cap * 2;
        entry *grown;
        if (d->entries == d->local_entries) {
            grown = malloc(sizeof(entry) * cap);
            if (grown) memcpy(grown, d->entries, sizeof(entry) * d->n_entries);
        } else {
            grown = realloc(d->entries, sizeof(entry) * cap);
        }
        if (!grown) {
            fail(d, GX_ERR_NO_MEMORY, d->body);
            return 0;
        }
        d->entries = grown;
        d->entries_cap = cap;
    }
    entry *e = &d->entries[d->n_entries];
    e->key = key;
    e->value = value;
    e->seq = d->n_entries++;
    return 1;
}

static inline int key_cmp(const slice *a, const slice *b) {
    uint32_t n = a->len < b->len ? a->len : b->len;
    if (n <= 16) { /* attribute keys are short: a loop beats a call to memcmp */
        for (uint32_t i = 0; i < n; i++) {
            if (a->ptr[i] != b->ptr[i]) return (int)a->ptr[i] - (int)b->ptr[i];
        }
    } else {
        int c = memcmp(a->ptr, b->ptr, n);
        if (c) return c;
    }
    return (a->len > b->len) - (a->len < b->len);
}

static int entry_cmp(const void *pa, const void *pb) {
    const entry *a = pa, *b = pb;
    int c = key_cmp(&a->key, &b->key);
    if (c) return c;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

/* A map entry message: key = 1, value = 2, both strings, missing ones "". */
static const uint8_t *parse_entry(decoder *d, const uint8_t *p, const uint8_t *end,
                                  int depth) {
    uint32_t len;
    p = read_length(d, p, end, &len);
    if (!p) return NULL;
    const uint8_t *entry_end = p + len;
    slice key = {p, 0}, value = {p, 0};
    int has_unknown = 0;
    while (p < entry_end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        p = read_tag(d, p, entry_end, &tag);
        if (!p) return NULL;
        if (tag == 0x0a) {
            p = read_string(d, p, entry_end, &key);
        } else if (tag == 0x12) {
            p = read_string(d, p, entry_end, &value);
        } else {
            p = skip_field(d, p, entry_end, tag, tag_at, depth);
            has_unknown = 1;
        }
        if (!p) return NULL;
    }
    /* upb keeps an entry with any unknown field (wrong wire type included) as an unknown
     * field of the message, out of the map: so it is dropped here too. */
    if (has_unknown) return p;
    return push_entry(d, key, value) ? p : NULL;
}

/* Sorts the current message's entries by key (last duplicate wins) and appends them. */
static int put_entries(decoder *d, int map_slot, int key_off, int key_data, int value_off,
                       int value_data) {
    gx_result *r = d->r;
    uint32_t n = d->n_entries;
    entry *e = d->entries;
    int duplicates = 0;
    if (n > 1) {
        if (n <= 16) { /* insertion sort: stable, so equal keys stay in wire order */
            for (uint32_t i = 1; i < n; i++) {
                entry x = e[i];
                uint32_t j = i;
                int c = 1;
                while (j > 0 && (c = key_cmp(&e[j - 1].key, &x.key)) > 0) {
                    e[j] = e[j - 1];
                    j--;
                }
                /* Where x stops, the element before it is the greatest key <= x's: equal
                 * exactly when x has a duplicate, so this finds every one. */
                if (j > 0 && c == 0) duplicates = 1;
                e[j] = x;
            }
        } else {
            qsort(e, n, sizeof(entry), entry_cmp); /* seq breaks ties: wire order */
            duplicates = 1;                        /* not tracked: check them all */
        }
    }
    if (r->map_entries + n > d->entry_cap) {
        int64_t want = d->entry_cap * 2;
        if (want < r->map_entries + n) want = r->map_entries + n;
        if (!grow_entries(d, key_off, value_off, want)) return 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (duplicates && i + 1 < n && key_cmp(&e[i].key, &e[i + 1].key) == 0)
            continue; /* a later one wins */
        if (!put_string(d, &r->buffers[key_off], &r->buffers[key_data], e[i].key.ptr,
                        e[i].key.len))
            return 0;
        if (!put_string(d, &r->buffers[value_off], &r->buffers[value_data], e[i].value.ptr,
                        e[i].value.len))
            return 0;
        r->map_entries++;
    }
    if (r->map_entries > MAX_OFFSET) {
        fail(d, GX_ERR_TOO_LARGE, d->body);
        return 0;
    }
    put_i32(&r->buffers[map_slot], (int32_t)r->map_entries);
    return 1;
}

/* ---- messages ------------------------------------------------------------------------- */

typedef struct {
    int64_t timestamp;
    slice service, route, method, trace_id;
    uint32_t status_code;
    double duration_ms;
    uint64_t bytes_in, bytes_out;
} fact;

#define CHECK(expr)                                                                           \
    do {                                                                                      \
        if (!(p = (expr))) return NULL;                                                       \
    } while (0)

/* Each field's wire type by field number (index 0 unused): RequestFact and ServiceEvent of
 * proto/gravix/v1/events.proto. A known number with another wire type is recorded: the
 * body is probably another message (a fact batch posted as events, a lone RequestFact). */
static const uint8_t FACT_WIRE_TYPES[] = {0, 0, 2, 2, 2, 0, 1, 0, 0, 2, 2};
static const uint8_t EVENT_WIRE_TYPES[] = {0, 0, 2, 2, 0, 2, 2, 2};

static inline void note_wrong_wire(decoder *d, uint32_t tag, const uint8_t *wire_types,
                                   size_t n) {
    uint32_t field = tag >> 3;
    gx_result *r = d->r;
    if (field > 0 && field < n && (tag & 7) != wire_types[field] && r->wrong_wire_row < 0) {
        r->wrong_wire_row = r->rows; /* the row this message becomes */
        r->wrong_wire_tag = tag;
    }
}

static const uint8_t *parse_fact(decoder *d, const uint8_t *p, const uint8_t *end) {
    const int depth = MAX_DEPTH - 1;
    fact f = {0};
    uint64_t v;
    f.service.ptr = f.route.ptr = f.method.ptr = f.trace_id.ptr = p;
    d->n_entries = 0;
    /* Fast path: serializers write fields in number order, so try each tag in turn with a
     * well-predicted compare before the switch's indirect jump. Same handlers, same order of
     * effects: whatever does not match here goes through the loop below, which also lets
     * later occurrences win. (Tags of fields 1-15 are one byte.) */
#define NEXT(byte) (p < end && *p == (byte) && (++p, 1))
    if (NEXT(GX_TAG_F_TIMESTAMP)) {
        CHECK(read_varint(d, p, end, &v));
        f.timestamp = (int64_t)v;
    }
    if (NEXT(GX_TAG_F_SERVICE)) CHECK(read_string(d, p, end, &f.service));
    if (NEXT(GX_TAG_F_ROUTE)) CHECK(read_string(d, p, end, &f.route));
    if (NEXT(GX_TAG_F_METHOD)) CHECK(read_string(d, p, end, &f.method));
    if (NEXT(GX_TAG_F_STATUS_CODE)) {
        CHECK(read_varint(d, p, end, &v));
        f.status_code = (uint32_t)v;
    }
    if (p < end && *p == GX_TAG_F_DURATION_MS && end - p >= 9) {
        memcpy(&f.duration_ms, p + 1, 8);
        p += 9;
    }
    if (NEXT(GX_TAG_F_BYTES_IN)) CHECK(read_varint(d, p, end, &f.bytes_in));
    if (NEXT(GX_TAG_F_BYTES_OUT)) CHECK(read_varint(d, p, end, &f.bytes_out));
    if (NEXT(GX_TAG_F_TRACE_ID)) CHECK(read_string(d, p, end, &f.trace_id));
    while (NEXT(GX_TAG_F_ATTR)) CHECK(parse_entry(d, p, end, depth - 1));
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        CHECK(read_tag(d, p, end, &tag));
        switch (tag) {
        case GX_TAG_F_TIMESTAMP:
            CHECK(read_varint(d, p, end, &v));
            f.timestamp = (int64_t)v;
            break;
        case GX_TAG_F_SERVICE: CHECK(read_string(d, p, end, &f.service)); break;
        case GX_TAG_F_ROUTE: CHECK(read_string(d, p, end, &f.route)); break;
        case GX_TAG_F_METHOD: CHECK(read_string(d, p, end, &f.method)); break;
        case GX_TAG_F_STATUS_CODE:
            CHECK(read_varint(d, p, end, &v));
            f.status_code = (uint32_t)v;
            break;
        case GX_TAG_F_DURATION_MS:
            if (end - p < 8) return fail(d, GX_ERR_TRUNCATED_FIXED, p);
            memcpy(&f.duration_ms, p, 8);
            p += 8;
            break;
        case GX_TAG_F_BYTES_IN: CHECK(read_varint(d, p, end, &f.bytes_in)); break;
        case GX_TAG_F_BYTES_OUT: CHECK(read_varint(d, p, end, &f.bytes_out)); break;
        case GX_TAG_F_TRACE_ID: CHECK(read_string(d, p, end, &f.trace_id)); break;
        case GX_TAG_F_ATTR: CHECK(parse_entry(d, p, end, depth - 1)); break;
        default:
            note_wrong_wire(d, tag, FACT_WIRE_TYPES, sizeof FACT_WIRE_TYPES);
            CHECK(skip_field(d, p, end, tag, tag_at, depth));
            break;
        }
    }

    gx_result *r = d->r;
    int64_t row = r->rows;
    if (row == d->row_cap &&
        !grow_rows(d, FACT_ROW_BUFFERS, sizeof FACT_ROW_BUFFERS / sizeof *FACT_ROW_BUFFERS,
                   d->row_cap * 2))
        return NULL;
    gx_buffer *b = r->buffers;
    put_i64(&b[GX_F_TIMESTAMP], f.timestamp ? f.timestamp : d->received_unix_nano);
    if (!put_string(d, &b[GX_F_SERVICE_OFFSETS], &b[GX_F_SERVICE_DATA], f.service.ptr,
                    f.service.len) ||
        !put_string(d, &b[GX_F_ROUTE_OFFSETS], &b[GX_F_ROUTE_DATA], f.route.ptr, f.route.len) ||
        !put_string(d, &b[GX_F_METHOD_OFFSETS], &b[GX_F_METHOD_DATA], f.method.ptr,
                    f.method.len) ||
        !put_string(d, &b[GX_F_TRACE_ID_OFFSETS], &b[GX_F_TRACE_ID_DATA], f.trace_id.ptr,
                    f.trace_id.len))
        return NULL;
    put_i32(&b[GX_F_STATUS_CODE], (int32_t)f.status_code);
    memcpy(b[GX_F_DURATION_MS].data + b[GX_F_DURATION_MS].len, &f.duration_ms, 8);
    b[GX_F_DURATION_MS].len += 8;
    put_i64(&b[GX_F_BYTES_IN], (int64_t)f.bytes_in);
    put_i64(&b[GX_F_BYTES_OUT], (int64_t)f.bytes_out);
    if (!put_entries(d, GX_F_ATTR_OFFSETS, GX_F_ATTR_KEY_OFFSETS, GX_F_ATTR_KEY_DATA,
                     GX_F_ATTR_VALUE_OFFSETS, GX_F_ATTR_VALUE_DATA))
        return NULL;

    if (f.service.len == 0 && r->empty_service_row < 0) r->empty_service_row = row;
    if (f.status_code > 999 && r->big_status_code_row < 0) {
        r->big_status_code_row = row;
        r->big_status_code = f.status_code;
    }
    if (f.bytes_in > (uint64_t)INT64_MAX && r->big_bytes_in_row < 0) {
        r->big_bytes_in_row = row;
        r->big_bytes_in = f.bytes_in;
    }
    if (f.bytes_out > (uint64_t)INT64_MAX && r->big_bytes_out_row < 0) {
        r->big_bytes_out_row = row;
        r->big_bytes_out = f.bytes_out;
    }
    r->rows = row + 1;
    return p;
}

typedef struct {
    int64_t timestamp;
    slice service, kind, message, trace_id;
    int32_t severity;
} event;

static const char *const SEVERITY_NAMES[] = {"UNSPECIFIED", "DEBUG", "INFO",
                                             "WARN",        "ERROR", "FATAL"};

static const uint8_t *parse_event(decoder *d, const uint8_t *p, const uint8_t *end) {
    const int depth = MAX_DEPTH - 1;
    event ev = {0};
    uint64_t v;
    ev.service.ptr = ev.kind.ptr = ev.message.ptr = ev.trace_id.ptr = p;
    d->n_entries = 0;
    /* The in-order fast path, as in parse_fact. */
    if (NEXT(GX_TAG_E_TIMESTAMP)) {
        CHECK(read_varint(d, p, end, &v));
        ev.timestamp = (int64_t)v;
    }
    if (NEXT(GX_TAG_E_SERVICE)) CHECK(read_string(d, p, end, &ev.service));
    if (NEXT(GX_TAG_E_KIND)) CHECK(read_string(d, p, end, &ev.kind));
    if (NEXT(GX_TAG_E_SEVERITY)) {
        CHECK(read_varint(d, p, end, &v));
        ev.severity = (int32_t)(uint32_t)v;
    }
    if (NEXT(GX_TAG_E_MESSAGE)) CHECK(read_string(d, p, end, &ev.message));
    if (NEXT(GX_TAG_E_TRACE_ID)) CHECK(read_string(d, p, end, &ev.trace_id));
    while (NEXT(GX_TAG_E_ATTR)) CHECK(parse_entry(d, p, end, depth - 1));
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        CHECK(read_tag(d, p, end, &tag));
        switch (tag) {
        case GX_TAG_E_TIMESTAMP:
            CHECK(read_varint(d, p, end, &v));
            ev.timestamp = (int64_t)v;
            break;
        case GX_TAG_E_SERVICE: CHECK(read_string(d, p, end, &ev.service)); break;
        case GX_TAG_E_KIND: CHECK(read_string(d, p, end, &ev.kind)); break;
        case GX_TAG_E_SEVERITY:
            CHECK(read_varint(d, p, end, &v));
            ev.severity = (int32_t)(uint32_t)v;
            break;
        case GX_TAG_E_MESSAGE: CHECK(read_string(d, p, end, &ev.message)); break;
        case GX_TAG_E_TRACE_ID: CHECK(read_string(d, p, end, &ev.trace_id)); break;
        case GX_TAG_E_ATTR: CHECK(parse_entry(d, p, end, depth - 1)); break;
        default:
            note_wrong_wire(d, tag, EVENT_WIRE_TYPES, sizeof EVENT_WIRE_TYPES);
            CHECK(skip_field(d, p, end, tag, tag_at, depth));
            break;
        }
    }

    gx_result *r = d->r;
    int64_t row = r->rows;
    if (row == d->row_cap &&
        !grow_rows(d, EVENT_ROW_BUFFERS, sizeof EVENT_ROW_BUFFERS / sizeof *EVENT_ROW_BUFFERS,
                   d->row_cap * 2))
        return NULL;
    gx_buffer *b = r->buffers;
    /* Open enum: unknown numbers are kept and stored as their decimal string. */
    char number[16];
    const char *severity;
    size_t severity_len;
    if (ev.severity >= 0 && ev.severity <= 5) {
        severity = SEVERITY_NAMES[ev.severity];
        severity_len = strlen(severity);
    } else {
        severity_len = (size_t)snprintf(number, sizeof number, "%d", (int)ev.severity);
        severity = number;
    }
    put_i64(&b[GX_E_TIMESTAMP], ev.timestamp ? ev.timestamp : d->received_unix_nano);
    if (!put_string(d, &b[GX_E_SERVICE_OFFSETS], &b[GX_E_SERVICE_DATA], ev.service.ptr,
                    ev.service.len) ||
        !put_string(d, &b[GX_E_KIND_OFFSETS], &b[GX_E_KIND_DATA], ev.kind.ptr, ev.kind.len) ||
        !put_string(d, &b[GX_E_SEVERITY_OFFSETS], &b[GX_E_SEVERITY_DATA],
                    (const uint8_t *)severity, (uint32_t)severity_len) ||
        !put_string(d, &b[GX_E_MESSAGE_OFFSETS], &b[GX_E_MESSAGE_DATA], ev.message.ptr,
                    ev.message.len) ||
        !put_string(d, &b[GX_E_TRACE_ID_OFFSETS], &b[GX_E_TRACE_ID_DATA], ev.trace_id.ptr,
                    ev.trace_id.len))
        return NULL;
    if (!put_entries(d, GX_E_ATTR_OFFSETS, GX_E_ATTR_KEY_OFFSETS, GX_E_ATTR_KEY_DATA,
                     GX_E_ATTR_VALUE_OFFSETS, GX_E_ATTR_VALUE_DATA))
        return NULL;
    if (ev.service.len == 0 && r->empty_service_row < 0) r->empty_service_row = row;
    r->rows = row + 1;
    return p;
}

#undef NEXT

/* ---- the batch ------------------------------------------------------------------------ */

typedef const uint8_t *(*parse_item_fn)(decoder *, const uint8_t *, const uint8_t *);

/* What differs between the two streams. `columns` spells the exported columns in schema
 * order: 'f' fixed width (one buffer slot), 's' string (offsets, data), 'm' the attributes
 * map (entry offsets, then key and value strings). */
typedef struct {
    const row_buffer *row_bufs;
    size_t n_row_bufs;
    const int *offset_slots; /* every int32 offsets buffer, starting with one 0 */
    size_t n_offset_slots;
    int map_slot, key_off, value_off, n_slots;
    parse_item_fn parse_item;
    const char *columns;
} stream_spec;

#define OFFSET_SLOTS_FIXED(P, C)
#define OFFSET_SLOTS_STRING(P, C) GX_##P##_##C##_OFFSETS,
#define OFFSET_SLOTS_MAP(P, C)                                                               \
    GX_##P##_##C##_OFFSETS, GX_##P##_##C##_KEY_OFFSETS, GX_##P##_##C##_VALUE_OFFSETS,
#define OFFSET_SLOTS(P, C, name, format, kind, width, number, wire) OFFSET_SLOTS_##kind(P, C)
static const int FACT_OFFSET_SLOTS[] = {GX_FACT_COLUMNS(OFFSET_SLOTS)};
static const int EVENT_OFFSET_SLOTS[] = {GX_EVENT_COLUMNS(OFFSET_SLOTS)};

/* Column kinds in schema order, as the export walks them: 'f', 's', 'm'. */
#define KIND_FIXED 'f'
#define KIND_STRING 's'
#define KIND_MAP 'm'
#define COLUMN_KIND(P, C, name, format, kind, width, number, wire) KIND_##kind,
static const char FACT_KINDS[] = {GX_FACT_COLUMNS(COLUMN_KIND) 0};
static const char EVENT_KINDS[] = {GX_EVENT_COLUMNS(COLUMN_KIND) 0};

#define COUNT(a) (sizeof a / sizeof *a)
static const stream_spec SPECS[2] = {
    {FACT_ROW_BUFFERS, COUNT(FACT_ROW_BUFFERS), FACT_OFFSET_SLOTS, COUNT(FACT_OFFSET_SLOTS),
     GX_F_ATTR_OFFSETS, GX_F_ATTR_KEY_OFFSETS, GX_F_ATTR_VALUE_OFFSETS, GX_F_COUNT, parse_fact,
     FACT_KINDS},
    {EVENT_ROW_BUFFERS, COUNT(EVENT_ROW_BUFFERS), EVENT_OFFSET_SLOTS, COUNT(EVENT_OFFSET_SLOTS),
     GX_E_ATTR_OFFSETS, GX_E_ATTR_KEY_OFFSETS, GX_E_ATTR_VALUE_OFFSETS, GX_E_COUNT, parse_event,
     EVENT_KINDS},
};

static void shrink_to_fit(gx_buffer *b) {
    /* Keep what a long-lived batch pins close to what it uses. */
    if (b->data && b->cap - b->len > 4096 && b->cap > b->len + b->len / 4) {
        uint8_t *data = realloc(b->data, (size_t)(b->len ? b->len : 1));
        if (data) {
            b->data = data;
            b->cap = b->len ? b->len : 1;
        }
    }
}

/* Resets `r` and sizes its buffers for about `len` bytes of input. */
static int begin(decoder *d, const stream_spec *s, const uint8_t *body, size_t len,
                 int64_t received_unix_nano, gx_result *r) {
    memset(d, 0, offsetof(decoder, local_entries));
    d->body = body;
    d->r = r;
    d->received_unix_nano = received_unix_nano;
    d->entries = d->local_entries;
    d->entries_cap = LOCAL_ENTRIES;
    r->rows = r->map_entries = 0;
    r->empty_service_row = r->big_status_code_row = -1;
    r->big_bytes_in_row = r->big_bytes_out_row = -1;
    r->wrong_wire_row = -1;
    r->wrong_wire_tag = 0;
    r->wrong_wire_batch = 0;
    r->error = GX_OK;
    r->error_offset = 0;
    for (int i = 0; i < GX_MAX_BUFFERS; i++) r->buffers[i].len = 0;

    if (len >= (size_t)MAX_OFFSET) {
        fail(d, GX_ERR_TOO_LARGE, body);
        return 0;
    }
    /* A realistic event is ~100 bytes: start there, double when short. */
    if (!grow_rows(d, s->row_bufs, s->n_row_bufs, (int64_t)(len / 96) + 16) ||
        !grow_entries(d, s->key_off, s->value_off, (int64_t)(len / 32) + 16))
        return 0;
    for (size_t i = 0; i < s->n_offset_slots; i++) put_i32(&r->buffers[s->offset_slots[i]], 0);
    /* Every slot gets memory, so that even empty columns have a real address for Arrow. */
    for (int i = 0; i < s->n_slots; i++) {
        if (!reserve(d, &r->buffers[i], (int64_t)(len / 16) + 64)) return 0;
    }
    return 1;
}

/* Records the outcome in `r`; GX_OK or the first error. */
static int finish(decoder *d, const stream_spec *s, const uint8_t *body) {
    gx_result *r = d->r;
    if (d->entries != d->local_entries) free(d->entries);
    if (d->error) {
        r->error = d->error;
        r->error_offset = d->error_at ? (int64_t)(d->error_at - body) : 0;
        return d->error;
    }
    for (int i = 0; i < s->n_slots; i++) shrink_to_fit(&r->buffers[i]);
    return GX_OK;
}

static int decode_batch(const stream_spec *s, const uint8_t *body, size_t len,
                        int64_t received_unix_nano, gx_result *r) {
    decoder d;
    if (begin(&d, s, body, len, received_unix_nano, r)) {
        const uint8_t *p = body, *end = body + len;
        while (p < end) {
            const uint8_t *tag_at = p;
            uint32_t tag;
            if (!(p = read_tag(&d, p, end, &tag))) break;
            if (tag == 0x0a) {
                uint32_t item_len;
                if (!(p = read_length(&d, p, end, &item_len))) break;
                if (!s->parse_item(&d, p, p + item_len)) break;
                p += item_len;
            } else {
                if ((tag >> 3) == 1 && !r->wrong_wire_batch) { /* field 1, not length-delimited */
                    r->wrong_wire_batch = 1;
                    r->wrong_wire_row = r->rows;
                    r->wrong_wire_tag = tag;
                }
                if (!(p = skip_field(&d, p, end, tag, tag_at, MAX_DEPTH))) break;
            }
        }
    }
    return finish(&d, s, body);
}

int gx_decode_facts(const uint8_t *body, size_t len, int64_t received_unix_nano,
                    gx_result *result) {
    return decode_batch(&SPECS[GX_STREAM_FACTS], body, len, received_unix_nano, result);
}

int gx_decode_events(const uint8_t *body, size_t len, int64_t received_unix_nano,
                     gx_result *result) {
    return decode_batch(&SPECS[GX_STREAM_EVENTS], body, len, received_unix_nano, result);
}

gx_result *gx_result_new(void) { return calloc(1, sizeof(gx_result)); }

void gx_result_free(gx_result *result) {
    if (!result) return;
    for (int i = 0; i < GX_MAX_BUFFERS; i++) free(result->buffers[i].data);
    free(result);
}

/* ---- Arrow C Data Interface export ------------------------------------------------------
 *
 * An exported batch is one malloc'd block holding the gx_result (whose buffers the arrays
 * point into) and every child ArrowArray with its buffer and child pointer arrays. The
 * block counts the ArrowArray structures still unreleased (the base one and each child):
 * a consumer releases the base, whose callback releases the children it still holds (one
 * it moved out is released by its new owner), and the last release frees it all. So a
 * moved child stays valid after its parent is released, as the interface requires. */

#define MAX_NODES 14 /* facts: the batch, 10 columns, the map's entries, key, value */

typedef struct {
    int64_t refs;
    gx_result *result;
    struct ArrowArray nodes[MAX_NODES];
    struct ArrowArray *children[MAX_NODES];
    const void *buffers[3 * MAX_NODES];
} export_block;

static int64_t live_exports;

int64_t gx_live_exports(void) { return __atomic_load_n(&live_exports, __ATOMIC_RELAXED); }

static void release_array(struct ArrowArray *array) {
    if (!array->release) return;
    for (int64_t i = 0; i < array->n_children; i++) {
        struct ArrowArray *child = array->children[i];
        if (child->release) child->release(child);
    }
    export_block *block = array->private_data;
    array->release = NULL;
    if (__atomic_sub_fetch(&block->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        gx_result_free(block->result);
        free(block);
        __atomic_sub_fetch(&live_exports, 1, __ATOMIC_RELAXED);
    }
}

typedef struct {
    export_block *block;
    int nodes, buffers, children;
} export_cursor;

/* Fills `a` as a node of `length` with a null validity buffer and the given buffer slots
 * (-1 ends the list), room for `n_children` children. */
static void set_node(export_cursor *c, struct ArrowArray *a, int64_t length, int n_children,
                     int slot0, int slot1) {
    export_block *b = c->block;
    a->length = length;
    a->null_count = 0;
    a->offset = 0;
    a->buffers = &b->buffers[c->buffers];
    b->buffers[c->buffers++] = NULL; /* no nulls: Arrow allows no validity bitmap */
    a->n_buffers = 1;
    if (slot0 >= 0) b->buffers[c->buffers++] = b->result->buffers[slot0].data, a->n_buffers++;
    if (slot1 >= 0) b->buffers[c->buffers++] = b->result->buffers[slot1].data, a->n_buffers++;
    a->n_children = n_children;
    a->children = n_children ? &b->children[c->children] : NULL;
    c->children += n_children;
    a->dictionary = NULL;
    a->release = release_array;
    a->private_data = b;
}

static struct ArrowArray *next_node(export_cursor *c) { return &c->block->nodes[c->nodes++]; }

/* Moves the buffers of `r` (owned from now on by `out`) into an exported struct array. */
static int export_result(const stream_spec *s, gx_result *r, struct ArrowArray *out) {
    export_block *b = calloc(1, sizeof *b);
    if (!b) return GX_ERR_NO_MEMORY;
    b->result = r;
    export_cursor c = {b, 0, 0, 0};
    int n_columns = (int)strlen(s->columns), slot = 0;
    set_node(&c, out, r->rows, n_columns, -1, -1);
    for (int i = 0; i < n_columns; i++) {
        struct ArrowArray *column = out->children[i] = next_node(&c);
        if (s->columns[i] == 'f') {
            set_node(&c, column, r->rows, 0, slot, -1);
            slot += 1;
        } else if (s->columns[i] == 's') {
            set_node(&c, column, r->rows, 0, slot, slot + 1);
            slot += 2;
        } else { /* 'm': map<string, string> = list of struct<key, value> */
            set_node(&c, column, r->rows, 1, slot, -1);
            struct ArrowArray *entries = column->children[0] = next_node(&c);
            set_node(&c, entries, r->map_entries, 2, -1, -1);
            set_node(&c, entries->children[0] = next_node(&c), r->map_entries, 0, slot + 1,
                     slot + 2);
            set_node(&c, entries->children[1] = next_node(&c), r->map_entries, 0, slot + 3,
                     slot + 4);
            slot += 5;
        }
    }
    b->refs = c.nodes + 1; /* the children, and `out` itself */
    __atomic_add_fetch(&live_exports, 1, __ATOMIC_RELAXED);
    return GX_OK;
}

static void clear_status(gx_status *st) {
    memset(st, 0, sizeof *st);
    st->frame_start = st->frame_end = -1;
    st->empty_service_row = st->big_status_code_row = -1;
    st->big_bytes_in_row = st->big_bytes_out_row = -1;
    st->wrong_wire_row = -1;
}

static int invalid_row(const gx_result *r) {
    return r->empty_service_row >= 0 || r->big_status_code_row >= 0 ||
           r->big_bytes_in_row >= 0 || r->big_bytes_out_row >= 0 || r->wrong_wire_row >= 0;
}

/* The contract's checks of `r` into `st`, rows counted from `first_row`. */
static void copy_checks(gx_status *st, const gx_result *r, int64_t first_row) {
#define ROW(x) ((x) >= 0 ? (x) - first_row : -1)
    st->empty_service_row = ROW(r->empty_service_row);
    st->big_status_code_row = ROW(r->big_status_code_row);
    st->big_status_code = r->big_status_code;
    st->big_bytes_in_row = ROW(r->big_bytes_in_row);
    st->big_bytes_in = r->big_bytes_in;
    st->big_bytes_out_row = ROW(r->big_bytes_out_row);
    st->big_bytes_out = r->big_bytes_out;
    st->wrong_wire_row = ROW(r->wrong_wire_row);
    st->wrong_wire_tag = r->wrong_wire_tag;
    st->wrong_wire_batch = r->wrong_wire_batch;
#undef ROW
}

/* Exports `r` if it has rows (else frees it); NO_MEMORY if that fails. */
static int export_or_free(const stream_spec *s, gx_result *r, struct ArrowArray *out) {
    if (r->rows == 0) {
        gx_result_free(r);
        return GX_OK;
    }
    int code = export_result(s, r, out);
    if (code) gx_result_free(r);
    return code;
}

int gx_decode_arrow(int stream, const uint8_t *body, size_t len, int64_t received_unix_nano,
                    gx_status *status, struct ArrowArray *out) {
    clear_status(status);
    out->release = NULL;
    const stream_spec *s = &SPECS[stream == GX_STREAM_EVENTS];
    gx_result *r = gx_result_new();
    if (!r) return status->error = GX_ERR_NO_MEMORY;
    int code = decode_batch(s, body, len, received_unix_nano, r);
    status->error_offset = r->error_offset;
    status->rows = r->rows;
    if (!code && invalid_row(r)) {
        copy_checks(status, r, 0);
        code = GX_ERR_INVALID;
    }
    if (code) {
        gx_result_free(r);
        return status->error = code;
    }
    /* An empty batch is exported too: a body may hold no events. */
    if ((code = export_result(s, r, out))) gx_result_free(r);
    return status->error = code;
}

/* Undoes the last row appended to `r` (one that broke the contract): every buffer's
 * length follows from the row count and the offsets before that row. */
static void drop_last_row(const stream_spec *s, gx_result *r) {
    int64_t rows = --r->rows;
    gx_buffer *b = r->buffers;
    int32_t entries;
    memcpy(&entries, b[s->map_slot].data + rows * 4, 4);
    r->map_entries = entries;
    for (size_t i = 0; i < s->n_row_bufs; i++) {
        b[s->row_bufs[i].slot].len = rows * s->row_bufs[i].width;
    }
    for (size_t i = 0; i < s->n_offset_slots; i++) {
        int slot = s->offset_slots[i];
        int64_t count = slot == s->key_off || slot == s->value_off ? entries : rows;
        b[slot].len = (count + 1) * 4;
        if (slot != s->map_slot) { /* a string column: its data follows its offsets */
            int32_t data_end;
            memcpy(&data_end, b[slot].data + count * 4, 4);
            b[slot + 1].len = data_end;
        }
    }
    r->empty_service_row = r->big_status_code_row = -1;
    r->big_bytes_in_row = r->big_bytes_out_row = -1;
    r->wrong_wire_row = -1;
    r->wrong_wire_tag = 0;
}

/* A frame's length prefix, read as gravixd/core/framing.py's ProtobufFramer does: up to 10
 * bytes, any value (more than 64 bits saturates, so it compares as too large). Returns the
 * prefix's byte count, 0 while incomplete, -1 when 10 bytes all have the continuation bit. */
static int frame_prefix(const uint8_t *p, const uint8_t *end, uint64_t *out) {
    uint64_t value = 0;
    int saturated = 0;
    for (int i = 0; i < 10; i++) {
        if (p + i >= end) return 0;
        uint64_t bits = p[i] & 0x7f;
        if (i == 9 ? bits > 1 : 0) saturated = 1;
        value |= bits << (7 * i);
        if (p[i] < 0x80) {
            *out = saturated ? UINT64_MAX : value;
            return i + 1;
        }
    }
    return -1;
}

int gx_decode_stream_arrow(int stream, const uint8_t *data, size_t len,
                           int64_t received_unix_nano, int64_t max_frame_bytes,
                           gx_status *status, struct ArrowArray *out) {
    clear_status(status);
    out->release = NULL;
    const stream_spec *s = &SPECS[stream == GX_STREAM_EVENTS];
    gx_result *r = gx_result_new();
    if (!r) return status->error = GX_ERR_NO_MEMORY;
    decoder d;
    int code = GX_OK;
    const uint8_t *p = data, *end = data + len;
    if (begin(&d, s, data, len, received_unix_nano, r)) {
        while (p < end) {
            uint64_t length;
            int prefix = frame_prefix(p, end, &length);
            if (prefix == 0) break; /* the prefix is still arriving */
            if (prefix < 0 || length > (uint64_t)max_frame_bytes) {
                /* The framing is lost: nothing from here on can be trusted. */
                code = prefix < 0 ? GX_ERR_FRAME_VARINT : GX_ERR_FRAME_TOO_LARGE;
                status->error_offset = status->frame_start = p - data;
                break;
            }
            if (length > (uint64_t)(end - p - prefix)) { /* the frame is still arriving */
                status->needed = (p - data) + prefix + (int64_t)length;
                break;
            }
            const uint8_t *message = p + prefix, *frame_end = message + length;
            /* As a batch entry, the prefix must also be a valid protobuf length. */
            if (prefix > 5 || length >= (uint64_t)MAX_OFFSET) {
                fail(&d, GX_ERR_BAD_LENGTH, p);
            } else if (s->parse_item(&d, message, frame_end) && invalid_row(r)) {
                copy_checks(status, r, r->rows - 1);
                drop_last_row(s, r);
                code = GX_ERR_INVALID;
            }
            if (d.error || code) {
                status->error_offset = status->frame_start = p - data;
                status->frame_end = frame_end - data;
                break;
            }
            p = frame_end;
        }
    }
    status->consumed = p - data;
    if (d.error) {
        code = d.error;
        status->error_offset = d.error_at ? d.error_at - data : 0;
        d.error = 0; /* frames before the bad one are good and exported */
        if (code == GX_ERR_NO_MEMORY || code == GX_ERR_TOO_LARGE) {
            /* Buffers may be half-appended: export nothing, blame no frame. */
            status->frame_start = status->frame_end = -1;
            finish(&d, s, data);
            gx_result_free(r);
            status->consumed = 0;
            return status->error = code;
        }
    }
    finish(&d, s, data);
    status->rows = r->rows;
    int exported = export_or_free(s, r, out);
    if (exported) {
        status->consumed = 0;
        status->rows = 0;
        return status->error = exported;
    }
    return status->error = code;
}

/* ---- the exported schema (static strings; one malloc'd block per export) --------------- */

#define ARROW_FLAG_NULLABLE 2
#define MAX_FIELDS 14

typedef struct {
    struct ArrowSchema nodes[MAX_FIELDS];
    struct ArrowSchema *children[MAX_FIELDS];
} schema_block;

#define COLUMN_NAME(P, C, name, format, kind, width, number, wire) name,
#define COLUMN_FORMAT(P, C, name, format, kind, width, number, wire) format,
#define COLUMN_NUMBER(P, C, name, format, kind, width, number, wire) number,
static const char *const FACT_NAMES[] = {GX_FACT_COLUMNS(COLUMN_NAME)};
static const char *const FACT_FORMATS[] = {GX_FACT_COLUMNS(COLUMN_FORMAT)};
static const int FACT_NUMBERS[] = {GX_FACT_COLUMNS(COLUMN_NUMBER)};
static const char *const EVENT_NAMES[] = {GX_EVENT_COLUMNS(COLUMN_NAME)};
static const char *const EVENT_FORMATS[] = {GX_EVENT_COLUMNS(COLUMN_FORMAT)};
static const int EVENT_NUMBERS[] = {GX_EVENT_COLUMNS(COLUMN_NUMBER)};
/* One map column a stream: its 3 extra nodes (entries, key, value) fit in the blocks. */
_Static_assert(GX_F_COLUMNS + 4 <= MAX_FIELDS && GX_F_COLUMNS + 4 <= MAX_NODES, "facts nodes");
_Static_assert(GX_E_COLUMNS + 4 <= MAX_FIELDS && GX_E_COLUMNS + 4 <= MAX_NODES, "events nodes");

int gx_column_info(int stream, int i, const char **name, const char **format, char *kind,
                   int *field_number) {
    int facts = stream != GX_STREAM_EVENTS;
    if (i < 0 || i >= (facts ? GX_F_COLUMNS : GX_E_COLUMNS)) return 0;
    *name = (facts ? FACT_NAMES : EVENT_NAMES)[i];
    *format = (facts ? FACT_FORMATS : EVENT_FORMATS)[i];
    *kind = (facts ? FACT_KINDS : EVENT_KINDS)[i];
    *field_number = (facts ? FACT_NUMBERS : EVENT_NUMBERS)[i];
    return 1;
}

static void release_schema(struct ArrowSchema *schema) {
    if (!schema->release) return;
    /* Children live in the root's block; a moved child needs nothing freed. */
    for (int64_t i = 0; i < schema->n_children; i++) schema->children[i]->release = NULL;
    void *block = schema->private_data;
    schema->release = NULL;
    free(block);
}

static void release_schema_child(struct ArrowSchema *schema) { schema->release = NULL; }

static void set_field(struct ArrowSchema *f, const char *format, const char *name,
                      int64_t flags, int64_t n_children, struct ArrowSchema **children) {
    f->format = format;
    f->name = name;
    f->metadata = NULL;
    f->flags = flags;
    f->n_children = n_children;
    f->children = children;
    f->dictionary = NULL;
    f->release = release_schema_child;
    f->private_data = NULL;
}

int gx_export_schema(int stream, struct ArrowSchema *out) {
    schema_block *b = calloc(1, sizeof *b);
    if (!b) return GX_ERR_NO_MEMORY;
    int facts = stream != GX_STREAM_EVENTS;
    int n = facts ? GX_F_COLUMNS : GX_E_COLUMNS;
    const char *const *names = facts ? FACT_NAMES : EVENT_NAMES;
    const char *const *formats = facts ? FACT_FORMATS : EVENT_FORMATS;
    int next = 0;
    set_field(out, "+s", "", 0, n, b->children);
    next = n;
    for (int i = 0; i < n; i++) {
        struct ArrowSchema *f = b->children[i] = &b->nodes[i];
        if (formats[i][0] == '+') { /* the map: entries struct<key not null, value> */
            struct ArrowSchema *entries = &b->nodes[next++];
            struct ArrowSchema **entry_children = &b->children[next];
            entry_children[0] = &b->nodes[next++];
            entry_children[1] = &b->nodes[next++];
            set_field(f, formats[i], names[i], ARROW_FLAG_NULLABLE, 1, &b->children[n]);
            b->children[n] = entries;
            set_field(entries, "+s", "entries", 0, 2, entry_children);
            set_field(entry_children[0], "u", "key", 0, 0, NULL);
            set_field(entry_children[1], "u", "value", ARROW_FLAG_NULLABLE, 0, NULL);
        } else {
            set_field(f, formats[i], names[i], ARROW_FLAG_NULLABLE, 0, NULL);
        }
    }
    out->release = release_schema;
    out->private_data = b;
    return GX_OK;
}

/* ---- OTLP requests: the same readers, buffers and export (see gravix_otlp.c) ------------ */
#include "gravix_otlp.c"
