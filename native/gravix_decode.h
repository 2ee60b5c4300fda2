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

/* cdef-begin */

/* A growable malloc'd byte buffer; `len` bytes are used. */
typedef struct {
    uint8_t *data;
    int64_t len;
    int64_t cap;
} gx_buffer;

/* Buffer slots of a result, in Arrow order. Offsets are int32 (Arrow `string`, `map`). */
enum {
    /* facts (RequestFact) */
    GX_F_TIMESTAMP = 0,
    GX_F_SERVICE_OFFSETS, GX_F_SERVICE_DATA,
    GX_F_ROUTE_OFFSETS, GX_F_ROUTE_DATA,
    GX_F_METHOD_OFFSETS, GX_F_METHOD_DATA,
    GX_F_STATUS_CODE,
    GX_F_DURATION_MS,
    GX_F_BYTES_IN,
    GX_F_BYTES_OUT,
    GX_F_TRACE_ID_OFFSETS, GX_F_TRACE_ID_DATA,
    GX_F_ATTR_OFFSETS, GX_F_ATTR_KEY_OFFSETS, GX_F_ATTR_KEY_DATA,
    GX_F_ATTR_VALUE_OFFSETS, GX_F_ATTR_VALUE_DATA,
    GX_F_COUNT,
    /* events (ServiceEvent) */
    GX_E_TIMESTAMP = 0,
    GX_E_SERVICE_OFFSETS, GX_E_SERVICE_DATA,
    GX_E_KIND_OFFSETS, GX_E_KIND_DATA,
    GX_E_SEVERITY_OFFSETS, GX_E_SEVERITY_DATA,
    GX_E_MESSAGE_OFFSETS, GX_E_MESSAGE_DATA,
    GX_E_TRACE_ID_OFFSETS, GX_E_TRACE_ID_DATA,
    GX_E_ATTR_OFFSETS, GX_E_ATTR_KEY_OFFSETS, GX_E_ATTR_KEY_DATA,
    GX_E_ATTR_VALUE_OFFSETS, GX_E_ATTR_VALUE_DATA,
    GX_E_COUNT
};

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
    GX_ERR_NO_MEMORY = 13
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

/* cdef-end */

#endif /* GRAVIX_DECODE_H */
