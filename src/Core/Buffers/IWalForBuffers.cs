/*-------------------------------------------------------------------------
 * IWalForBuffers.cs
 *   What the buffer manager and the checkpointer need from the
 *   write-ahead log, so that Buffers does not depend on PgIpc.Wal (the
 *   higher layer): flush WAL before a page is written, and the WAL half of
 *   a checkpoint.
 *
 * NOTES
 *   Set by the WAL module in every process that has both (BufferPool.Wal,
 *   Checkpointer.Wal). Without WAL both are null and nothing changes.
 *
 *   Mirrors the XLogFlush call in bufmgr.c's FlushBuffer and the
 *   CreateCheckPoint steps around CheckPointGuts in xlog.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;

namespace PgIpc.Buffers;

/// <summary>The WAL as the buffer manager and checkpointer see it.</summary>
internal interface IWalForBuffers
{
    /// <summary>XLogFlush(page LSN): WAL up to the page's LSN is durable before the page is written.</summary>
    void FlushForWrite(Participant me, ReadOnlySpan<byte> page);

    /// <summary>Moves the redo pointer (a checkpoint begins); returns it.</summary>
    ulong BeginCheckpoint(Participant me);

    /// <summary>Writes the checkpoint record and the control file after the buffers are written; returns the record's start.</summary>
    ulong CompleteOnlineCheckpoint(Participant me, ulong redo);
}
