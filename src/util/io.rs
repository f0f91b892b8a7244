//! Async I/O helpers shared by the Thrift front and the replica transport.

use futures_lite::{AsyncWrite, AsyncWriteExt};

/// Writes all of `bytes` and flushes: a TLS stream keeps records buffered until flushed (a
/// plain socket has nothing to flush), so every write that must reach the peer goes through
/// here.
pub async fn write_all_flushed<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}
