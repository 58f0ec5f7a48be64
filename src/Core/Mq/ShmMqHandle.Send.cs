/*-------------------------------------------------------------------------
 * ShmMqHandle.Send.cs
 *   The send path of a queue handle (shm_mq_send / shm_mq_sendv): framing a
 *   message into the ring, in pieces when it is larger than the free space,
 *   and publishing BytesWritten.
 *
 * NOTES
 *   A message is an 8-byte length word, the payload and padding to a
 *   multiple of 8, copied from the caller's pieces (ShmMqPieces) into the
 *   ring; the bytes are published by a release store of BytesWritten that
 *   adds SendPending (see the batching note in ShmMqHandle.cs). With nowait
 *   a full ring returns WouldBlock and the handle remembers how far the
 *   message got, so the next call with the same message goes on from there.
 *
 *   Mirrors shm_mq_send, shm_mq_sendv and shm_mq_send_bytes in
 *   src/backend/storage/ipc/shm_mq.c.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Mq;

public sealed unsafe partial class ShmMqHandle
{
    // ------------------------------------------------------------------
    // Send
    // ------------------------------------------------------------------

    /// <summary>
    /// Sends one message (shm_mq_send). With <paramref name="nowait"/> a full ring returns WouldBlock; call again with
    /// the same message to go on where it stopped. <paramref name="forceFlush"/> false lets the bytes wait in this
    /// handle until a quarter of the ring is pending (or the ring fills, or <see cref="Flush"/>/<see cref="Detach"/>):
    /// fewer wake-ups for a stream of small messages, but the receiver does not see them before that.
    /// </summary>
    public ShmMqResult Send(ReadOnlySpan<byte> message, bool nowait = false, bool forceFlush = true)
    {
        var pieces = new ShmMqPieces(message, default, default);
        return SendCore(in pieces, nowait, forceFlush);
    }

    /// <summary>Sends the concatenation of <paramref name="first"/> and <paramref name="second"/> as one message.</summary>
    public ShmMqResult Send(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second, bool nowait = false, bool forceFlush = true)
    {
        var pieces = new ShmMqPieces(first, second, default);
        return SendCore(in pieces, nowait, forceFlush);
    }

    /// <summary>
    /// Sends the concatenation of <paramref name="pieces"/> as one message (shm_mq_sendv). A collection expression
    /// (<c>[a, b, c]</c>) builds the span on the stack.
    /// </summary>
    public ShmMqResult SendV(ReadOnlySpan<ReadOnlyMemory<byte>> pieces, bool nowait = false, bool forceFlush = true)
    {
        var p = new ShmMqPieces(default, default, pieces);
        return SendCore(in p, nowait, forceFlush);
    }

    /// <summary>Publishes bytes held back by sends with forceFlush false and wakes the receiver.</summary>
    public void Flush()
    {
        ThrowIfNot(sender: true);
        FlushPending();
    }

    private ShmMqResult SendCore(in ShmMqPieces pieces, bool nowait, bool forceFlush)
    {
        ThrowIfNot(sender: true);
        long len = pieces.Length;
        if (len > ShmMq.MaxMessageSize)
            throw new ArgumentOutOfRangeException(nameof(pieces), len, $"cannot send a message of {len} bytes via shared memory queue (limit {ShmMq.MaxMessageSize})");
        if (_sendLength >= 0 && _sendLength != len)
            throw new InvalidOperationException($"a nowait send of a {_sendLength}-byte message is half done; resend that message, not one of {len} bytes");
        if (_detached)
            return ShmMqResult.Detached;
        _sendLength = len;
        long total = LengthWordSize + Align8(len);
        long ring = _ringSize;
        bool spin = _spin;
        while (_sendPartial < total)
        {
            // Acquire; pairs with the receiver's release store of BytesRead: the space it frees is no longer read
            // when we overwrite it (shm_mq_send_bytes' full barrier before the copy).
            long rb = Volatile.Read(ref _h->BytesRead);
            long wb = _bytesWritten + _sendPending; // our own counter (private: see the constructor)
            long available = ring - (wb - rb);
            if (Volatile.Read(ref _h->Detached) != 0)
                return SawDetached();
            // Normal is 1..ring; one test covers both the full ring (0) and a receiver's counter out of range.
            if ((ulong)(available - 1) >= (ulong)ring)
            {
                if (available != 0)
                    ThrowCounterCorrupt(wb, rb);
                // Publish and wake the receiver before waiting: it may be asleep with the ring full of our bytes.
                FlushPending();
                if (nowait)
                    return ShmMqResult.WouldBlock;
                if (!WaitForPeer(&_h->BytesRead, rb, SendWaitEvent, ref spin))
                    return SawDetached();
                continue;
            }
            long offset = wb % ring;
            long n = Math.Min(Math.Min(available, ring - offset), total - _sendPartial);
            if (n == total)
            {
                // The common case: the whole framed message fits in one piece (the length word is 8-aligned there).
                byte* at = _ring + offset;
                *(long*)at = len;
                pieces.CopyTo(0, new Span<byte>(at + LengthWordSize, (int)len));
                new Span<byte>(at + LengthWordSize + len, (int)(total - LengthWordSize - len)).Clear();
            }
            else
            {
                CopyFramed(in pieces, len, _sendPartial, new Span<byte>(_ring + offset, (int)n));
            }
            _sendPartial += n;
            _sendPending += n;
            // Past a quarter of the ring, publish even in the middle of a message: a message larger than a quarter
            // then streams through (the receiver copies one part out while we write the next) instead of the
            // receiver seeing nothing until the ring is full.
            if (_sendPending > (ring >> 2) && _sendPartial < total)
                FlushPending();
        }
        _sendPartial = 0;
        _sendLength = -1;
        if (forceFlush || _sendPending > (ring >> 2))
            FlushPending();
        _me.Counters.MqBytesSent += len; // the meter's count: a plain add by the participant's own thread (PgIpcMetrics.cs)
        return ShmMqResult.Success;
    }

    /// <summary>Writes bytes [from, from + dest.Length) of the framed message (length word, payload, zero padding).</summary>
    private static void CopyFramed(in ShmMqPieces pieces, long len, long from, Span<byte> dest)
    {
        if (from < LengthWordSize)
        {
            // The length word is 8-aligned in the ring and the ring size a multiple of 8, but the receiver may have
            // freed an unaligned amount: write whichever part of the word fits.
            Span<byte> word = stackalloc byte[LengthWordSize];
            MemoryMarshal.Write(word, in len);
            int n = (int)Math.Min(LengthWordSize - from, dest.Length);
            word.Slice((int)from, n).CopyTo(dest);
            dest = dest[n..];
            from = LengthWordSize;
        }
        if (dest.IsEmpty)
            return;
        long payloadFrom = from - LengthWordSize;
        if (payloadFrom < len)
        {
            int n = (int)Math.Min(len - payloadFrom, dest.Length);
            pieces.CopyTo(payloadFrom, dest[..n]);
            dest = dest[n..];
        }
        dest.Clear(); // padding
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FlushPending()
    {
        if (_sendPending == 0)
            return;
        // Release: the ring bytes copied above are visible to whoever acquire-loads this value (the receiver in
        // ReceiveBytes); shm_mq_inc_bytes_written's write barrier.
        _bytesWritten += _sendPending;
        Volatile.Write(ref _h->BytesWritten, _bytesWritten);
        _sendPending = 0;
        WakePeer();
    }
}
