/* fuzz_decode.c - a time-bounded mutation fuzzer for gravix_decode.c, built with
 * -fsanitize=address,undefined by tests/unit/test_native_fuzz.py (gcc has no libFuzzer).
 *
 *   fuzz_decode SECONDS SEED SEED_FILE...
 *
 * Each round takes a seed body (valid batches written by the test), applies a few random
 * mutations (flip, set, insert, delete, duplicate a span, truncate), copies the result to a
 * malloc'd block of exactly its size (so ASan sees any read past the end) and decodes it as
 * both streams. On success it checks the result's invariants (offsets start at 0, never
 * decrease, end at the data length; row counts agree). Any sanitizer report, failed
 * invariant or crash exits non-zero. Prints "rounds N ok M" at the end.
 *
 * Each mutant also goes through the Arrow export (gx_decode_arrow): the exported tree is
 * walked (every buffer read, so ASan sees a dangling one), then released either whole or
 * after moving one column out, which must outlive its parent; LeakSanitizer and
 * gx_live_exports() check that the release callbacks free everything. And it is read as a
 * delimited stream (gx_decode_stream_arrow) whole and cut in two at a random point, as TCP
 * reads arrive: the cut must not change how many rows come out or where it stops.
 * And as an OTLP ExportTraceServiceRequest and ExportLogsServiceRequest
 * (gx_decode_otlp_arrow, native/gravix_otlp.c), with a record limit now and then small:
 * an error with an offset inside the body, or a batch walked and released.
 */
#define _POSIX_C_SOURCE 199309L
#include "gravix_decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state;

static uint64_t next_random(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t below(size_t n) { return n ? (size_t)(next_random() % n) : 0; }

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int64_t detail) {
    fprintf(stderr, "invariant failed: %s (%lld)\n", what, (long long)detail);
    abort();
}

static void check_string(const gx_result *r, int offsets_slot, int data_slot, int64_t n) {
    const gx_buffer *o = &r->buffers[offsets_slot], *d = &r->buffers[data_slot];
    if (o->len != (n + 1) * 4) die("offsets length", offsets_slot);
    int32_t prev = 0, cur;
    for (int64_t i = 0; i <= n; i++) {
        memcpy(&cur, o->data + i * 4, 4);
        if (i == 0 ? cur != 0 : cur < prev) die("offsets order", offsets_slot);
        prev = cur;
    }
    if (prev != d->len) die("offsets end", data_slot);
}

static void check(const gx_result *r, int facts) {
    int64_t n = r->rows, m = r->map_entries;
    if (facts) {
        if (r->buffers[GX_F_TIMESTAMP].len != n * 8) die("timestamps", n);
        if (r->buffers[GX_F_STATUS_CODE].len != n * 4) die("status codes", n);
        if (r->buffers[GX_F_DURATION_MS].len != n * 8) die("durations", n);
        if (r->buffers[GX_F_BYTES_IN].len != n * 8 || r->buffers[GX_F_BYTES_OUT].len != n * 8)
            die("bytes", n);
        check_string(r, GX_F_SERVICE_OFFSETS, GX_F_SERVICE_DATA, n);
        check_string(r, GX_F_ROUTE_OFFSETS, GX_F_ROUTE_DATA, n);
        check_string(r, GX_F_METHOD_OFFSETS, GX_F_METHOD_DATA, n);
        check_string(r, GX_F_TRACE_ID_OFFSETS, GX_F_TRACE_ID_DATA, n);
        check_string(r, GX_F_ATTR_KEY_OFFSETS, GX_F_ATTR_KEY_DATA, m);
        check_string(r, GX_F_ATTR_VALUE_OFFSETS, GX_F_ATTR_VALUE_DATA, m);
    } else {
        if (r->buffers[GX_E_TIMESTAMP].len != n * 8) die("timestamps", n);
        check_string(r, GX_E_SERVICE_OFFSETS, GX_E_SERVICE_DATA, n);
        check_string(r, GX_E_KIND_OFFSETS, GX_E_KIND_DATA, n);
        check_string(r, GX_E_SEVERITY_OFFSETS, GX_E_SEVERITY_DATA, n);
        check_string(r, GX_E_MESSAGE_OFFSETS, GX_E_MESSAGE_DATA, n);
        check_string(r, GX_E_TRACE_ID_OFFSETS, GX_E_TRACE_ID_DATA, n);
        check_string(r, GX_E_ATTR_KEY_OFFSETS, GX_E_ATTR_KEY_DATA, m);
        check_string(r, GX_E_ATTR_VALUE_OFFSETS, GX_E_ATTR_VALUE_DATA, m);
    }
}

/* Reads every byte of every buffer of an exported array (offsets checked against data). */
static int64_t walk(const struct ArrowArray *a, int depth) {
    if (!a->release) die("walk released array", depth);
    if (a->null_count != 0 || a->offset != 0 || a->buffers[0] != NULL) die("nulls", depth);
    int64_t sum = 0;
    if (a->n_buffers == 3) { /* string: offsets, data */
        const int32_t *offsets = a->buffers[1];
        const uint8_t *data = a->buffers[2];
        if (offsets[0] != 0) die("string offsets start", depth);
        for (int64_t i = 0; i < a->length; i++) {
            if (offsets[i + 1] < offsets[i]) die("string offsets order", depth);
        }
        for (int32_t i = 0; i < offsets[a->length]; i++) sum += data[i];
    } else if (a->n_buffers == 2 && a->n_children == 1) { /* map: entry offsets */
        const int32_t *offsets = a->buffers[1];
        if (offsets[a->length] != a->children[0]->length) die("map offsets end", depth);
    } else if (a->n_buffers == 2) { /* fixed width: 4 or 8 bytes, read 4 at a time */
        const uint8_t *data = a->buffers[1];
        for (int64_t i = 0; i < a->length * 4; i++) sum += data[i];
    }
    for (int64_t i = 0; i < a->n_children; i++) {
        if (a->children[i]->length != (depth == 0 || depth == 2 ? a->length
                                                                 : a->children[i]->length))
            die("child length", depth);
        sum += walk(a->children[i], depth + 1);
    }
    return sum;
}

static void check_export(const uint8_t *body, size_t len, int facts) {
    struct ArrowArray array;
    gx_status st;
    int rc = gx_decode_arrow(facts ? GX_STREAM_FACTS : GX_STREAM_EVENTS, body, len, 42, &st,
                             &array);
    if (rc != st.error) die("arrow return code", rc);
    if (rc != GX_OK) {
        if (array.release) die("exported on error", rc);
        return;
    }
    if (array.length != st.rows || array.n_children != (facts ? 10 : 7)) die("shape", rc);
    walk(&array, 0);
    if (below(2)) {
        array.release(&array);
    } else { /* move one column out, release the batch, then use and release the column */
        int64_t i = (int64_t)below((size_t)array.n_children);
        struct ArrowArray column = *array.children[i];
        array.children[i]->release = NULL;
        array.release(&array);
        walk(&column, 1);
        column.release(&column);
    }
    if (array.release) die("release left the callback", 0);
    if (gx_live_exports() != 0) die("exported batch not freed", gx_live_exports());
}

/* Decodes `data` as a delimited stream in one call; returns rows, sets the stop point. */
static int64_t stream_once(const uint8_t *data, size_t len, int facts, int64_t max_frame,
                           gx_status *st) {
    struct ArrowArray array;
    int rc = gx_decode_stream_arrow(facts ? GX_STREAM_FACTS : GX_STREAM_EVENTS, data, len, 42,
                                    max_frame, st, &array);
    if (rc != st->error) die("stream return code", rc);
    if (st->consumed < 0 || (size_t)st->consumed > len) die("consumed", st->consumed);
    if (rc != GX_OK && st->frame_start != st->consumed) die("frame start", st->frame_start);
    if (st->needed && (rc != GX_OK || st->needed <= (int64_t)len || st->needed <= st->consumed))
        die("needed", st->needed); /* a partial frame ends past what was given */
    if (rc != GX_OK && (st->error_offset < st->frame_start || (size_t)st->error_offset > len))
        die("stream error offset", st->error_offset);
    if (!array.release) {
        if (st->rows) die("rows without an array", st->rows);
        return 0;
    }
    if (array.length != st->rows || st->rows == 0) die("stream rows", st->rows);
    walk(&array, 0);
    array.release(&array);
    return st->rows;
}

static void check_stream(const uint8_t *data, size_t len, int facts) {
    int64_t max_frame = below(4) ? 1 << 20 : (int64_t)below(256);
    gx_status whole, first, second;
    int64_t rows = stream_once(data, len, facts, max_frame, &whole);
    /* The same bytes in two reads: the first stops at a frame boundary at or before the
     * cut, the second starts there. Together they must stop where the whole call did. */
    size_t cut = below(len + 1);
    int64_t split_rows = stream_once(data, cut, facts, max_frame, &first);
    if (first.error == GX_OK) {
        size_t at = (size_t)first.consumed;
        split_rows += stream_once(data + at, len - at, facts, max_frame, &second);
        if (second.error != whole.error || at + (size_t)second.consumed != (size_t)whole.consumed)
            die("split stream stops elsewhere", (int64_t)cut);
        if (split_rows != rows) die("split stream rows", split_rows);
    } else if (first.error != whole.error || first.consumed != whole.consumed) {
        /* An error in the first read lies in whole bytes before the cut: the whole read,
         * with the same frames before it, meets it too. */
        die("error before the cut differs", (int64_t)cut);
    }
    if (gx_live_exports() != 0) die("stream batch not freed", gx_live_exports());
}

/* An OTLP request through gx_decode_otlp_arrow, both signals: an error (with an offset in
 * the body) or an exported batch that is walked and released; records bound the rows. */
static int check_otlp(const uint8_t *body, size_t len, int logs) {
    struct ArrowArray array;
    gx_otlp_status st;
    int64_t max_records = below(4) ? 1 << 20 : (int64_t)below(8);
    int rc = gx_decode_otlp_arrow(logs ? GX_OTLP_LOGS : GX_OTLP_TRACES, body, len, 42,
                                  max_records, &st, &array);
    if (rc != st.error) die("otlp return code", rc);
    if (st.records > max_records + 1) die("otlp records past the limit", st.records);
    if (rc != GX_OK) {
        if (array.release) die("otlp exported on error", rc);
        if (st.error_offset < 0 || (size_t)st.error_offset > len)
            die("otlp error offset", st.error_offset);
        if (rc == GX_ERR_TOO_MANY_RECORDS && st.records != max_records + 1)
            die("otlp too many records", st.records);
        return 0;
    }
    int64_t ignored = 0, rejected = 0;
    for (int i = 0; i < GX_SPAN_KINDS; i++) ignored += st.ignored_by_kind[i];
    for (int i = 0; i < GX_REJECT_REASONS; i++) rejected += st.rejected_by_reason[i];
    for (int64_t i = 0; i < st.rejected && i < GX_OTLP_REJECTIONS_KEPT; i++) {
        const gx_otlp_rejection *x = &st.rejections[i];
        if (x->offset < 0 || x->length < 0 || (size_t)(x->offset + x->length) > len ||
            x->reason < 0 || x->reason >= GX_REJECT_REASONS)
            die("otlp rejection", x->offset);
    }
    if (array.length != st.rows || rejected != st.rejected ||
        st.rows + ignored + rejected != st.records ||
        (logs && ignored) || array.n_children != (logs ? 7 : 10))
        die("otlp shape", st.rows);
    walk(&array, 0);
    array.release(&array);
    if (gx_live_exports() != 0) die("otlp batch not freed", gx_live_exports());
    return 1;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc(size > 0 ? (size_t)size : 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) die("read seed", size);
    fclose(f);
    *len = (size_t)size;
    return data;
}

static size_t mutate(uint8_t *buf, size_t len, size_t cap) {
    int rounds = 1 + (int)below(4);
    for (int k = 0; k < rounds; k++) {
        size_t at = below(len + 1);
        switch (below(7)) {
        case 0: if (len) buf[below(len)] ^= (uint8_t)(1u << below(8)); break;
        case 1: if (len) buf[below(len)] = (uint8_t)next_random(); break;
        case 2: { /* interesting bytes: continuation bits, tags, wire types 3/4/6/7 */
            static const uint8_t special[] = {0x00, 0x80, 0xff, 0x7f, 0x0a, 0x0b, 0x0c,
                                              0x0e, 0x0f, 0x12, 0x52, 0x3a, 0xc0, 0xed};
            if (len) buf[below(len)] = special[below(sizeof special)];
            break;
        }
        case 3: /* insert a random byte */
            if (len < cap) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = (uint8_t)next_random();
                len++;
            }
            break;
        case 4: /* delete a span */
            if (at < len) {
                size_t n = 1 + below(len - at < 16 ? len - at : 16);
                memmove(buf + at, buf + at + n, len - at - n);
                len -= n;
            }
            break;
        case 5: /* duplicate a span */
            if (at < len) {
                size_t n = 1 + below(len - at < 32 ? len - at : 32);
                if (len + n <= cap) {
                    memmove(buf + at + n, buf + at, len - at);
                    len += n;
                }
            }
            break;
        default: /* truncate */
            len = below(len + 1);
            break;
        }
    }
    return len;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s SECONDS SEED SEED_FILE...\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]);
    rng_state = strtoull(argv[2], NULL, 10) | 1;
    int n_seeds = argc - 3;
    uint8_t **seeds = calloc((size_t)n_seeds, sizeof *seeds);
    size_t *lens = calloc((size_t)n_seeds, sizeof *lens);
    size_t max_len = 0;
    for (int i = 0; i < n_seeds; i++) {
        seeds[i] = read_file(argv[3 + i], &lens[i]);
        if (!seeds[i]) die("open seed", i);
        if (lens[i] > max_len) max_len = lens[i];
    }
    size_t cap = max_len * 2 + 64;
    uint8_t *work = malloc(cap);
    double deadline = now_seconds() + seconds;
    long rounds = 0, ok = 0, otlp_ok = 0;
    static const char *const aliases[] = {"debug", "info", "warn", "warning", "error", "fatal"};
    static const int numbers[] = {1, 2, 3, 3, 4, 5};
    for (int i = 0; i < 6; i++) gx_otlp_severity_alias(aliases[i], numbers[i]);
    while ((rounds & 63) || now_seconds() < deadline) {
        int s = (int)below((size_t)n_seeds);
        memcpy(work, seeds[s], lens[s]);
        size_t len = mutate(work, lens[s], cap);
        uint8_t *exact = malloc(len ? len : 1); /* so a read past the end is an ASan error */
        memcpy(exact, work, len);
        for (int facts = 0; facts < 2; facts++) {
            gx_result *r = gx_result_new();
            int rc = facts ? gx_decode_facts(exact, len, 42, r) : gx_decode_events(exact, len, 42, r);
            if (rc != r->error) die("return code", rc);
            if (rc == GX_OK) {
                check(r, facts);
                ok++;
            } else if (r->error_offset < 0 || (size_t)r->error_offset > len) {
                die("error offset", r->error_offset);
            }
            gx_result_free(r);
            check_export(exact, len, facts);
            check_stream(exact, len, facts);
            otlp_ok += check_otlp(exact, len, facts);
        }
        free(exact);
        rounds++;
    }
    printf("rounds %ld ok %ld otlp_ok %ld\n", rounds, ok, otlp_ok);
    for (int i = 0; i < n_seeds; i++) free(seeds[i]);
    free(seeds);
    free(lens);
    free(work);
    return 0;
}
