"""Drives paxoskv through the Apache Thrift Python client over the unframed (buffered)
transport, the way existing production clients connect. Exits non-zero on the first failure.

Usage: client_test.py HOST PORT GEN_DIR [CA_FILE]
(GEN_DIR holds `thrift --gen py` output; with CA_FILE the connection is TLS through Thrift's
TSSLSocket, verifying the server's certificate against CA_FILE and its name against HOST.)
"""
import sys
import time

host, port, gen = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ca = sys.argv[4] if len(sys.argv) > 4 else None
sys.path.insert(0, gen)

from thrift.protocol import TBinaryProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402
from paxoskv import TransactionalKV  # noqa: E402
from paxoskv.ttypes import *  # noqa: E402,F401,F403

if ca is None:
    sock = TSocket.TSocket(host, port)
else:
    import ssl  # noqa: E402
    from thrift.transport import TSSLSocket  # noqa: E402

    sock = TSSLSocket.TSSLSocket(host, port, cert_reqs=ssl.CERT_REQUIRED, ca_certs=ca)
sock.setTimeout(30000)
transport = TTransport.TBufferedTransport(sock)
client = TransactionalKV.Client(TBinaryProtocol.TBinaryProtocol(transport))
transport.open()


def check(cond, what):
    if not cond:
        print("FAILED:", what, flush=True)
        sys.exit(1)


r = client.ping(PingRequest(message=b"py", timestamp=7))
check(r.message == b"py" and r.timestamp == 7, "ping echoes")

check(client.setKey(SetKeyRequest(key=b"py/a", value=b"\x00\xff")).success, "setKey")
r = client.get(GetRequest(key=b"py/a"))
check(r.found and r.value == b"\x00\xff", "get returns binary value")
check(client.setKey(SetKeyRequest(key=b"py/a", value=b"cf", column_family="py")).success, "setKey cf")
check(client.get(GetRequest(key=b"py/a", column_family="py")).value == b"cf", "cf get")

rv = client.getReadVersion(GetReadVersionRequest())
check(rv.success and rv.read_version > 0, "getReadVersion")
check(client.setKey(SetKeyRequest(key=b"py/a", value=b"new")).success, "overwrite")
r = client.snapshotRead(SnapshotReadRequest(key=b"py/a", read_version=rv.read_version))
check(r.found and r.value == b"\x00\xff", "snapshotRead sees the old value")
r = client.snapshotGet(SnapshotGetRequest(key=b"py/a", read_version=rv.read_version))
check(r.value == b"\x00\xff", "snapshotGet")

rv = client.getReadVersion(GetReadVersionRequest()).read_version
ops = [Operation(type="set", key=b"py/t", value=b"1")]
r1 = client.atomicCommit(AtomicCommitRequest(read_version=rv, operations=ops, read_conflict_keys=[b"py/t"]))
check(r1.success and r1.committed_version > rv, "atomicCommit commits")
r2 = client.atomicCommit(AtomicCommitRequest(read_version=rv, operations=ops, read_conflict_keys=[b"py/t"]))
check(not r2.success and r2.error_code == "CONFLICT", "second atomicCommit conflicts: %r" % (r2,))
cv = client.getCommittedVersion(GetCommittedVersionRequest())
check(cv.success and cv.version == r1.committed_version, "getCommittedVersion")

for i in range(3):
    client.setKey(SetKeyRequest(key=b"py/r/%d" % i, value=b"%d" % i))
r = client.getRange(GetRangeRequest(begin_key=b"py/r/", end_key=b"py/r/~", limit=2))
check(r.success and len(r.key_values) == 2 and r.has_more, "getRange limit/has_more")
r = client.getRange(GetRangeRequest(begin_key=b"py/r/", end_key=b"py/r/~"))
check([kv.key for kv in r.key_values] == [b"py/r/0", b"py/r/1", b"py/r/2"], "getRange keys")
rv = client.getReadVersion(GetReadVersionRequest()).read_version
r = client.snapshotGetRange(SnapshotGetRangeRequest(begin_key=b"py/r/", end_key=b"py/r/~", read_version=rv))
check(r.success and len(r.key_values) == 3, "snapshotGetRange")

check(client.deleteKey(DeleteKeyRequest(key=b"py/r/0")).success, "deleteKey")
check(not client.get(GetRequest(key=b"py/r/0")).found, "deleted")
check(client.addReadConflict(AddReadConflictRequest(key=b"py/x")).success, "addReadConflict")
check(client.addReadConflictRange(AddReadConflictRangeRequest(start_key=b"a", end_key=b"b")).success, "addReadConflictRange")
check(client.setReadVersion(SetReadVersionRequest(version=rv)).success, "setReadVersion")
r = client.atomicCommit(AtomicCommitRequest(read_version=rv, operations=[], read_conflict_keys=[]))
check(r.success, "empty commit with registered conflicts nobody wrote")

r = client.setVersionstampedKey(SetVersionstampedKeyRequest(key_prefix=b"py/vs/" + b"\x00" * 10, value=b"v"))
check(r.success and len(r.generated_key) == 16, "setVersionstampedKey")
r = client.setVersionstampedValue(SetVersionstampedValueRequest(key=b"py/vsv", value_prefix=b"\x00" * 10))
check(r.success and len(r.generated_value) == 10, "setVersionstampedValue")

t = client.beginTransaction(BeginTransactionRequest())
check(t.success and t.transaction_id, "beginTransaction")
r = client.commitTransaction(CommitTransactionRequest(transaction_id=t.transaction_id,
                                                      operations=[Operation(type="set", key=b"py/itx", value=b"1")]))
check(r.success, "commitTransaction")
t = client.beginTransaction(BeginTransactionRequest())
check(client.abortTransaction(AbortTransactionRequest(transaction_id=t.transaction_id)).success, "abortTransaction")

check(client.getClusterHealth(GetClusterHealthRequest()).success, "getClusterHealth")
check(client.getDatabaseStats(GetDatabaseStatsRequest()).success, "getDatabaseStats")
check(client.getNodeInfo(GetNodeInfoRequest()).success, "getNodeInfo")
check(not client.setFaultInjection(FaultInjectionRequest(fault_type="error")).success, "fault injection refused")

# Unknown methods: a Thrift application exception, and the connection stays usable.
from thrift.Thrift import TApplicationException, TMessageType  # noqa: E402

proto = TBinaryProtocol.TBinaryProtocol(transport)
proto.writeMessageBegin("noSuchMethod", TMessageType.CALL, 99)
proto.writeStructBegin("args")
proto.writeFieldStop()
proto.writeStructEnd()
proto.writeMessageEnd()
transport.flush()
name, mtype, seq = proto.readMessageBegin()
check(mtype == TMessageType.EXCEPTION and seq == 99, "unknown method gets an exception")
exc = TApplicationException()
exc.read(proto)
proto.readMessageEnd()
check(exc.type == TApplicationException.UNKNOWN_METHOD, "UNKNOWN_METHOD: %r" % exc.type)
check(client.ping(PingRequest(message=b"still")).message == b"still", "connection usable after exception")

transport.close()
print("python client: all checks passed", flush=True)
