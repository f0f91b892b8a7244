// paxoskv client API: the Thrift service `TransactionalKV`.
//
// Wire compatibility with existing clients of the service is a hard rule: method names, each
// method's single argument at field id 1 named `request`, and every field id and type below must
// never change. Struct names do not travel on the wire. New methods and new optional fields may be
// added; nothing may be renumbered or retyped.
//
// Conventions: every method takes one request struct and returns one response struct; errors
// travel inside the response (`success = false`, `error` text, `error_code` where present), never
// as Thrift exceptions. Stable error codes: CONFLICT, TIMEOUT, NOT_PRIMARY, TOO_LARGE,
// INVALID_ARGUMENT, UNAVAILABLE, INTERNAL, TOO_OLD.
//
// Optional fields with a documented default take that default when absent.

namespace rs paxoskv
namespace py paxoskv

// ---------------------------------------------------------------------------------------------
// Shared structs
// ---------------------------------------------------------------------------------------------

// One write inside atomicCommit / commitTransaction.
// type: "set", "delete", "SET_VERSIONSTAMPED_KEY", "SET_VERSIONSTAMPED_VALUE" (anything else is
// INVALID_ARGUMENT and the whole commit applies nothing).
struct Operation {
  1: required string type,
  2: required binary key,
  3: optional binary value,
  4: optional string column_family,
}

struct KeyValue {
  1: required binary key,
  2: required binary value,
}

// A half-open key range [begin_key, end_key) of one column family (default when absent).
struct KeyRange {
  1: required binary begin_key,
  2: required binary end_key,
  3: optional string column_family,
}

struct NodeStatus {
  1: required i32 node_id,
  2: required string endpoint,
  3: required string status,          // healthy | degraded | unreachable | unknown
  4: required bool is_leader,
  5: required i64 last_seen_timestamp, // unix milliseconds
  6: required i64 term,                // the Paxos view this node is in
  7: optional i64 uptime_seconds,
}

struct ClusterHealth {
  1: required list<NodeStatus> nodes,
  2: required i32 healthy_nodes_count,
  3: required i32 total_nodes_count,
  4: optional NodeStatus leader,
  5: required string cluster_status,   // healthy | degraded | unhealthy
  6: required i64 current_term,
}

struct DatabaseStats {
  1: required i64 total_keys,
  2: required i64 total_size_bytes,
  3: required i64 write_operations_count,
  4: required i64 read_operations_count,
  5: required double average_response_time_ms,
  6: required i64 active_transactions,
  7: required i64 committed_transactions,
  8: required i64 aborted_transactions,
  9: optional i64 cache_hit_rate_percent,
  10: optional i64 compaction_pending_bytes,
}

// ---------------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------------

struct GetReadVersionRequest {}
struct GetReadVersionResponse {
  1: required i64 read_version,
  2: required bool success,
  3: optional string error,
}

struct SnapshotReadRequest {
  1: required binary key,
  2: required i64 read_version,
  3: optional string column_family,
}
struct SnapshotReadResponse {
  1: required binary value,
  2: required bool found,
  3: optional string error,
}

struct AtomicCommitRequest {
  1: required i64 read_version,
  2: required list<Operation> operations,
  3: required list<binary> read_conflict_keys, // keys of the default column family
  4: optional i64 timeout_seconds,             // default 60
  // Added by paxoskv (older clients never set it): ranges read, in any column family; the
  // commit fails with CONFLICT if a commit after read_version wrote a key in one of them.
  5: optional list<KeyRange> read_conflict_ranges,
}
struct AtomicCommitResponse {
  1: required bool success,
  2: optional string error,
  3: optional string error_code,
  4: optional i64 committed_version,
}

struct GetRequest {
  1: required binary key,
  2: optional string column_family,
}
struct GetResponse {
  1: required binary value,
  2: required bool found,
  3: optional string error,
}

struct SetKeyRequest {
  1: required binary key,
  2: required binary value,
  3: optional string column_family,
}
struct SetKeyResponse {
  1: required bool success,
  2: optional string error,
  3: optional string error_code,
}

struct DeleteKeyRequest {
  1: required binary key,
  2: optional string column_family,
}
struct DeleteKeyResponse {
  1: required bool success,
  2: optional string error,
  3: optional string error_code,
}

// Key selectors (see README "Range reads"): the range starts at the first key >= begin_key
// (> begin_key when begin_or_equal is false), moved forward by begin_offset keys; it ends before
// the first key >= end_key (after end_key when end_or_equal is true), moved by end_offset keys.
struct GetRangeRequest {
  1: optional binary begin_key,   // default ""
  2: optional binary end_key,     // default one 0xFF byte
  3: optional i32 begin_offset,   // default 0
  4: optional bool begin_or_equal, // default true
  5: optional i32 end_offset,     // default 0
  6: optional bool end_or_equal,  // default false
  7: optional i32 limit,          // default 1000; 0 = no limit
  8: optional string column_family,
}
struct GetRangeResponse {
  1: required list<KeyValue> key_values,
  2: required bool success,
  3: optional string error,
  4: required bool has_more,
}

struct SnapshotGetRequest {
  1: required binary key,
  2: required i64 read_version,
  3: optional string column_family,
}
struct SnapshotGetResponse {
  1: required binary value,
  2: required bool found,
  3: optional string error,
}

struct SnapshotGetRangeRequest {
  1: optional binary begin_key,
  2: optional binary end_key,
  3: optional i32 begin_offset,
  4: optional bool begin_or_equal,
  5: optional i32 end_offset,
  6: optional bool end_or_equal,
  7: required i64 read_version,
  8: optional i32 limit,           // default 1000; 0 = no limit
  9: optional string column_family,
}
struct SnapshotGetRangeResponse {
  1: required list<KeyValue> key_values,
  2: required bool success,
  3: optional string error,
  4: required bool has_more,
}

struct AddReadConflictRequest {
  1: required binary key,
  2: optional string column_family,
}
struct AddReadConflictResponse {
  1: required bool success,
  2: optional string error,
}

struct AddReadConflictRangeRequest {
  1: required binary start_key,
  2: required binary end_key,
  3: optional string column_family,
}
struct AddReadConflictRangeResponse {
  1: required bool success,
  2: optional string error,
}

struct SetReadVersionRequest {
  1: required i64 version,
}
struct SetReadVersionResponse {
  1: required bool success,
  2: optional string error,
}

struct GetCommittedVersionRequest {}
struct GetCommittedVersionResponse {
  1: required i64 version,
  2: required bool success,
  3: optional string error,
}

struct SetVersionstampedKeyRequest {
  1: required binary key_prefix,
  2: required binary value,
  3: optional string column_family,
}
struct SetVersionstampedKeyResponse {
  1: required binary generated_key,
  2: required bool success,
  3: optional string error,
}

struct SetVersionstampedValueRequest {
  1: required binary key,
  2: required binary value_prefix,
  3: optional string column_family,
}
struct SetVersionstampedValueResponse {
  1: required binary generated_value,
  2: required bool success,
  3: optional string error,
}

struct FaultInjectionRequest {
  1: required string fault_type,
  2: optional double probability, // default 0.0
  3: optional i32 duration_ms,    // default 0
  4: optional string target_operation,
  // paxoskv: required (and checked in constant time) when the server has an admin token.
  5: optional string auth_token,
}
struct FaultInjectionResponse {
  1: required bool success,
  2: optional string error,
}

struct PingRequest {
  1: optional binary message,
  2: optional i64 timestamp,
}
struct PingResponse {
  1: required binary message,
  2: required i64 timestamp,
  3: required i64 server_timestamp,
}

struct GetClusterHealthRequest {
  1: optional string auth_token,
}
struct GetClusterHealthResponse {
  1: required bool success,
  2: optional ClusterHealth cluster_health,
  3: optional string error,
}

struct GetDatabaseStatsRequest {
  1: optional string auth_token,
  2: optional bool include_detailed_stats, // default false
}
struct GetDatabaseStatsResponse {
  1: required bool success,
  2: optional DatabaseStats database_stats,
  3: optional string error,
}

struct GetNodeInfoRequest {
  1: optional string auth_token,
  2: optional i32 node_id,
}
struct GetNodeInfoResponse {
  1: required bool success,
  2: optional NodeStatus node_info,
  3: optional string error,
}

// Interactive (server-side) transactions: added by paxoskv, new names only.
struct BeginTransactionRequest {
  1: optional i64 read_version,    // default: the latest committed version
  2: optional i64 timeout_seconds, // default 60
}
struct BeginTransactionResponse {
  1: required string transaction_id,
  2: required i64 read_version,
  3: required bool success,
  4: optional string error,
}

struct CommitTransactionRequest {
  1: required string transaction_id,
  2: required list<Operation> operations,
  3: optional list<binary> read_conflict_keys,
  4: optional list<KeyRange> read_conflict_ranges,
}

struct AbortTransactionRequest {
  1: required string transaction_id,
}
struct AbortTransactionResponse {
  1: required bool success,
  2: optional string error,
}

service TransactionalKV {
  GetReadVersionResponse getReadVersion(1: GetReadVersionRequest request),
  SnapshotReadResponse snapshotRead(1: SnapshotReadRequest request),
  AtomicCommitResponse atomicCommit(1: AtomicCommitRequest request),
  GetResponse get(1: GetRequest request),
  SetKeyResponse setKey(1: SetKeyRequest request),
  DeleteKeyResponse deleteKey(1: DeleteKeyRequest request),
  GetRangeResponse getRange(1: GetRangeRequest request),
  SnapshotGetResponse snapshotGet(1: SnapshotGetRequest request),
  SnapshotGetRangeResponse snapshotGetRange(1: SnapshotGetRangeRequest request),
  AddReadConflictResponse addReadConflict(1: AddReadConflictRequest request),
  AddReadConflictRangeResponse addReadConflictRange(1: AddReadConflictRangeRequest request),
  SetReadVersionResponse setReadVersion(1: SetReadVersionRequest request),
  GetCommittedVersionResponse getCommittedVersion(1: GetCommittedVersionRequest request),
  SetVersionstampedKeyResponse setVersionstampedKey(1: SetVersionstampedKeyRequest request),
  SetVersionstampedValueResponse setVersionstampedValue(1: SetVersionstampedValueRequest request),
  FaultInjectionResponse setFaultInjection(1: FaultInjectionRequest request),
  PingResponse ping(1: PingRequest request),
  GetClusterHealthResponse getClusterHealth(1: GetClusterHealthRequest request),
  GetDatabaseStatsResponse getDatabaseStats(1: GetDatabaseStatsRequest request),
  GetNodeInfoResponse getNodeInfo(1: GetNodeInfoRequest request),

  BeginTransactionResponse beginTransaction(1: BeginTransactionRequest request),
  AtomicCommitResponse commitTransaction(1: CommitTransactionRequest request),
  AbortTransactionResponse abortTransaction(1: AbortTransactionRequest request),
}
