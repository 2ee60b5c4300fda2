/* gravix_decode.h - the native protobuf decoder's interface: RequestFactBatch /
 * ServiceEventBatch bytes -> Arrow column buffers (DESIGN.md section 5).
 *
 * This header is the single source of the cffi cdef: native/build_native.py feeds everything
 * between the "cdef-begin" and "cdef-end" markers to ffibuilder.cdef(), so that region may
 * hold only plain declarations and integer #defines (no other preprocessor lines).
 *
 * The decoder must accept exactly what upb (the `protobuf` package) accepts and reject what
 * it rejects; gravixd/native.py turns the result into the same Arrow record batch as
 * gravixd.core.decode.decode_protobuf_pure. It never reads outside [body, body + len).
 */
#ifndef GRAVIX_DECODE_H
#define GRAVIX_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "gravix_columns.h"

/* cdef-begin */

/* A growable malloc'd byte buffer; `len` bytes are used. */
typedef struct {
    uint8_t *data;
    int64_t len;
    int64_t cap;
} gx_buffer;

/* Buffer slots of a result, in Arrow order (GX_F_*, GX_E_*): gravix_columns.h derives them
 * from the column table. Offsets are int32 (Arrow `string`, `map`). */
#define GX_MAX_BUFFERS 18

/* Return codes; on error `error_offset` is the byte of `body` where the bad element starts. */
enum {
    GX_OK = 0,
    GX_ERR_TRUNCATED_VARINT = 1,
    GX_ERR_VARINT_TOO_LONG = 2,
    GX_ERR_BAD_TAG = 3,           /* field number 0, or a tag over 32 bits / 5 bytes */
    GX_ERR_BAD_WIRE_TYPE = 4,     /* wire type 6 or 7 */
    GX_ERR_BAD_LENGTH = 5,        /* a length over 5 bytes or >= 2^31 */
    GX_ERR_LENGTH_PAST_END = 6,
    GX_ERR_TRUNCATED_FIXED = 7,
    GX_ERR_UNEXPECTED_END_GROUP = 8,
    GX_ERR_UNTERMINATED_GROUP = 9,
    GX_ERR_TOO_DEEP = 10,
    GX_ERR_INVALID_UTF8 = 11,
    GX_ERR_TOO_LARGE = 12,        /* a column over Arrow's 2 GiB int32 offsets */
    GX_ERR_NO_MEMORY = 13,
    /* Only from the gx_decode_*_arrow entry points: */
    GX_ERR_INVALID = 14,          /* well-formed, but a row breaks the contract (see status) */
    GX_ERR_FRAME_TOO_LARGE = 15,  /* stream: a length prefix above max_frame_bytes */
    GX_ERR_FRAME_VARINT = 16,     /* stream: a length prefix of 10 bytes, continuation set */
    /* Only from gx_decode_otlp_arrow: */
    GX_ERR_FALLBACK = 17,         /* a form C does not produce: decode it with the Python mapping */
    GX_ERR_TOO_MANY_RECORDS = 18  /* more records than max_records */
};

typedef struct {
    int64_t rows;
    int64_t map_entries;          /* entries of the attributes map, all rows */
    gx_buffer buffers[18];        /* GX_MAX_BUFFERS; slots per the enum above */
    int32_t error;
    int64_t error_offset;
    /* Validation the contract adds on top of protobuf (first offending row, else -1). */
    int64_t empty_service_row;
    int64_t big_status_code_row;  /* status_code > 999 */
    uint32_t big_status_code;
    int64_t big_bytes_in_row;     /* bytes_in > 2^63 - 1 */
    uint64_t big_bytes_in;
    int64_t big_bytes_out_row;
    uint64_t big_bytes_out;
    /* A known field with another wire type (what another message's field of that number
     * has): the first such row and its tag, else -1; or the batch's own field 1 (batch = 1,
     * row = the entries before it). Probably another message posted (see native.py). */
    int64_t wrong_wire_row;
    uint32_t wrong_wire_tag;
    int32_t wrong_wire_batch;
} gx_result;

/* A zeroed result; NULL when out of memory. Free it (and every buffer) with gx_result_free. */
gx_result *gx_result_new(void);
void gx_result_free(gx_result *result);

/* Decode a whole batch body. Timestamps of 0 become `received_unix_nano`.
 * Returns GX_OK or an error code (also stored in result->error). */
int gx_decode_facts(const uint8_t *body, size_t len, int64_t received_unix_nano,
                    gx_result *result);
int gx_decode_events(const uint8_t *body, size_t len, int64_t received_unix_nano,
                     gx_result *result);

/* ---- the Arrow C Data Interface (https://arrow.apache.org/docs/format/CDataInterface.html)
 * The standard's own definitions, verbatim. (Its ARROW_C_DATA_INTERFACE include guard is
 * left out: the cdef region takes no preprocessor lines, and nothing else defines them.) */
struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

enum { GX_STREAM_FACTS = 0, GX_STREAM_EVENTS = 1 };

/* What a gx_decode_*_arrow call did, besides the array it exported. */
typedef struct {
    int32_t error;                /* GX_OK or an error code */
    int64_t error_offset;         /* byte of the input where the bad element starts */
    int64_t rows;                 /* rows exported */
    /* Stream entry only: bytes of whole frames taken (a partial last frame is not), and
     * for a frame that stopped the call (GX_ERR_INVALID or a protobuf error) where it
     * starts and ends in the input. */
    int64_t consumed;
    int64_t frame_start;
    int64_t frame_end;
    /* Stream entry, GX_OK: where in the input the partial last frame will end, once its
     * length prefix has arrived (else 0), so a caller can wait for that many bytes. */
    int64_t needed;
    /* GX_ERR_INVALID: the row (of this call's input) and value, as in gx_result. */
    int64_t empty_service_row;
    int64_t big_status_code_row;
    uint32_t big_status_code;
    int64_t big_bytes_in_row;
    uint64_t big_bytes_in;
    int64_t big_bytes_out_row;
    uint64_t big_bytes_out;
    int64_t wrong_wire_row;
    uint32_t wrong_wire_tag;
    int32_t wrong_wire_batch;
} gx_status;

/* Decode a whole batch body of `stream` and export it as an Arrow struct array (a record
 * batch with the schema of gravixd/schema.py). On GX_OK `*out` owns every buffer: its
 * release callback frees them (pyarrow calls it when the last array over them goes).
 * On any error (GX_ERR_INVALID included) nothing is exported: out->release is NULL and
 * `*status` says why. One call, no other allocation for the caller to free. */
int gx_decode_arrow(int stream, const uint8_t *body, size_t len, int64_t received_unix_nano,
                    gx_status *status, struct ArrowArray *out);

/* Decode a stream of varint length-delimited RequestFact / ServiceEvent messages (as
 * protobuf's writeDelimitedTo), the whole frames at the start of [data, data + len), into
 * one exported struct array. It stops at the end of the last whole frame (status->consumed:
 * keep the rest for the next call), or at the first frame that
 *   - has a length prefix above max_frame_bytes or 10 bytes long (GX_ERR_FRAME_*; the
 *     framing is lost, error_offset = frame_start = the prefix's offset),
 *   - does not parse (a protobuf error code; error_offset is where in the input), or
 *   - breaks the contract (GX_ERR_INVALID; the row fields say which check, with row 0);
 * the frames before it are exported (out->release is NULL when there are none) and
 * consumed = frame_start. Returns status->error. */
int gx_decode_stream_arrow(int stream, const uint8_t *data, size_t len,
                           int64_t received_unix_nano, int64_t max_frame_bytes,
                           gx_status *status, struct ArrowArray *out);

/* ---- OTLP/HTTP protobuf requests (native/gravix_otlp.c) ------------------------------- */

enum { GX_OTLP_TRACES = 0, GX_OTLP_LOGS = 1 };

/* Span kinds counted: OTLP's 0..5 (unspecified, internal, server, client, producer,
 * consumer), then any other number. */
#define GX_SPAN_KINDS 7

/* Why a record is rejected (gravixd/core/otlp.py's reasons, in its order of checks). */
enum {
    GX_REJECT_TRACE_ID = 0,       /* invalid_trace_id */
    GX_REJECT_TIME = 1,           /* invalid_time */
    GX_REJECT_STATUS_CODE = 2,    /* invalid_status_code */
    GX_REJECT_BYTES_IN = 3,       /* invalid_bytes_in */
    GX_REJECT_BYTES_OUT = 4,      /* invalid_bytes_out */
    GX_REJECT_REASONS = 5
};

/* A rejected record: where its message is in the body, its indices in the request. */
typedef struct {
    int64_t offset, length;
    int32_t resource, scope, record, reason;
} gx_otlp_rejection;

typedef struct {
    int32_t error;                /* GX_OK, a protobuf error, GX_ERR_FALLBACK, ..._MANY_RECORDS */
    int64_t error_offset;         /* byte of the body where the bad or unhandled element starts */
    int64_t rows;                 /* rows exported */
    int64_t records;              /* spans (of every kind) or log records walked */
    int64_t ignored_by_kind[7];   /* GX_SPAN_KINDS: spans not of kind SERVER, by kind */
    int64_t rejected;             /* records rejected (not exported), by reason: */
    int64_t rejected_by_reason[5];    /* GX_REJECT_REASONS */
    gx_otlp_rejection rejections[5];  /* the first ones (GX_OTLP_REJECTIONS_KEPT) */
} gx_otlp_status;

#define GX_OTLP_REJECTIONS_KEPT 5

/* Map an ExportTraceServiceRequest (GX_OTLP_TRACES, SERVER spans -> facts) or an
 * ExportLogsServiceRequest (GX_OTLP_LOGS, log records -> events) to one exported struct
 * array, exactly as gravixd/core/otlp.py's mapping does; records it rejects are left out
 * and reported in the status. GX_ERR_FALLBACK: the body holds something C does not map
 * itself (an odd encoding: see gravix_otlp.c); nothing is exported and the caller decodes
 * the body with the Python mapping.
 * A protobuf error means C could not parse it (the caller lets upb have the last word).
 * More than `max_records` records stops the walk early (GX_ERR_TOO_MANY_RECORDS). */
int gx_decode_otlp_arrow(int signal, const uint8_t *body, size_t len,
                         int64_t received_unix_nano, int64_t max_records,
                         gx_otlp_status *status, struct ArrowArray *out);

/* Registers a severity name (lowercase, without SEVERITY_) and the gravixd severity number
 * it stands for, for log records' severity_text: gravixd/native.py registers
 * gravixd/schema.py's SEVERITY_ALIASES at import. 0 when the table is full or the name long. */
int gx_otlp_severity_alias(const char *name, int number);

/* Row `i` of `stream`'s column table (gravix_columns.h), for tests to hold it to
 * gravixd/schema.py: 1 and the fields set, or 0 past the last column. `kind` is 'f', 's' or
 * 'm' (fixed width, string, map). */
int gx_column_info(int stream, int i, const char **name, const char **format, char *kind,
                   int *field_number);

/* The schema of `stream`'s exported arrays (a struct of the columns), for checking. */
int gx_export_schema(int stream, struct ArrowSchema *out);

/* Exported arrays whose buffers are not yet freed, process-wide (for leak tests). */
int64_t gx_live_exports(void);

/* cdef-end */

#endif /* GRAVIX_DECODE_H */
