/* gravix_columns.h - the column table of each stream, once, as X-macros: the C side of
 * gravixd/schema.py's COLUMNS (tests/unit/test_native.py holds the two equal, through
 * gx_column_info). Everything per column in the decoder derives from these rows: the buffer
 * slot enums, the per-row and offsets buffer lists, the exported names and Arrow formats,
 * the column kinds the export walks, and the protobuf tags the parsers dispatch on.
 *
 * X(P, COLUMN, name, arrow_format, KIND, width, field_number, wire_type)
 *   P       F (facts, RequestFact) or E (events, ServiceEvent): the slot prefix
 *   KIND    FIXED (one data buffer of `width` bytes a row), STRING (int32 offsets, UTF-8
 *           data) or MAP (map<string,string>: entry offsets, key offsets/data, value
 *           offsets/data)
 *   field_number, wire_type: the column's field in the proto message (DESIGN section 1)
 *
 * Not part of the cffi cdef (it takes no macros): the slots stay C's own business.
 */
#ifndef GRAVIX_COLUMNS_H
#define GRAVIX_COLUMNS_H

#define GX_FACT_COLUMNS(X)                                                                  \
    X(F, TIMESTAMP, "timestamp", "tsn:UTC", FIXED, 8, 1, 0)                                 \
    X(F, SERVICE, "service", "u", STRING, 4, 2, 2)                                          \
    X(F, ROUTE, "route", "u", STRING, 4, 3, 2)                                              \
    X(F, METHOD, "method", "u", STRING, 4, 4, 2)                                            \
    X(F, STATUS_CODE, "status_code", "i", FIXED, 4, 5, 0)                                   \
    X(F, DURATION_MS, "duration_ms", "g", FIXED, 8, 6, 1)                                   \
    X(F, BYTES_IN, "bytes_in", "l", FIXED, 8, 7, 0)                                         \
    X(F, BYTES_OUT, "bytes_out", "l", FIXED, 8, 8, 0)                                       \
    X(F, TRACE_ID, "trace_id", "u", STRING, 4, 9, 2)                                        \
    X(F, ATTR, "attributes", "+m", MAP, 4, 10, 2)

#define GX_EVENT_COLUMNS(X)                                                                 \
    X(E, TIMESTAMP, "timestamp", "tsn:UTC", FIXED, 8, 1, 0)                                 \
    X(E, SERVICE, "service", "u", STRING, 4, 2, 2)                                          \
    X(E, KIND, "kind", "u", STRING, 4, 3, 2)                                                \
    X(E, SEVERITY, "severity", "u", STRING, 4, 4, 0) /* an enum on the wire, a name here */ \
    X(E, MESSAGE, "message", "u", STRING, 4, 5, 2)                                          \
    X(E, TRACE_ID, "trace_id", "u", STRING, 4, 6, 2)                                        \
    X(E, ATTR, "attributes", "+m", MAP, 4, 7, 2)

/* Buffer slots of a gx_result, in Arrow order: GX_F_TIMESTAMP, GX_F_SERVICE_OFFSETS,
 * GX_F_SERVICE_DATA, ..., GX_F_ATTR_VALUE_DATA, GX_F_COUNT. */
#define GX_SLOTS_FIXED(P, C) GX_##P##_##C,
#define GX_SLOTS_STRING(P, C) GX_##P##_##C##_OFFSETS, GX_##P##_##C##_DATA,
#define GX_SLOTS_MAP(P, C)                                                                  \
    GX_##P##_##C##_OFFSETS, GX_##P##_##C##_KEY_OFFSETS, GX_##P##_##C##_KEY_DATA,            \
        GX_##P##_##C##_VALUE_OFFSETS, GX_##P##_##C##_VALUE_DATA,
#define GX_SLOTS(P, C, name, format, kind, width, number, wire) GX_SLOTS_##kind(P, C)
enum { GX_FACT_COLUMNS(GX_SLOTS) GX_F_COUNT };
enum { GX_EVENT_COLUMNS(GX_SLOTS) GX_E_COUNT };

/* Protobuf tags (field number << 3 | wire type): GX_TAG_F_SERVICE = 0x12, ... */
#define GX_TAGS(P, C, name, format, kind, width, number, wire) \
    GX_TAG_##P##_##C = ((number) << 3 | (wire)),
enum { GX_FACT_COLUMNS(GX_TAGS) GX_EVENT_COLUMNS(GX_TAGS) };

/* Columns a stream has, by kind. */
#define GX_ONE(P, C, name, format, kind, width, number, wire) +1
enum { GX_F_COLUMNS = 0 GX_FACT_COLUMNS(GX_ONE), GX_E_COLUMNS = 0 GX_EVENT_COLUMNS(GX_ONE) };

#endif /* GRAVIX_COLUMNS_H */
