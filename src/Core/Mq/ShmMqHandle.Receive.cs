/*-------------------------------------------------------------------------
 * ShmMqHandle.Receive.cs
 *   The receive path of a queue handle (shm_mq_receive): reading the length
 *   word and the payload, zero copy when the message lies in the ring in one
 *   piece, assembled in the handle's buffer otherwise, and publishing
 *   BytesRead.
 *
 * NOTES
 *   A message that wraps round the ring is copied into a per-handle buffer,
 *   grown to the next power of two only when a larger message arrives.
 *
 *   Mirrors shm_mq_receive and shm_mq_receive_bytes in
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
    // Receive
    // ------------------------------------------------------------------

    /// <summary>
    /// Receives one message (shm_mq_receive). The span points into the ring when the message lies there in one piece,
    /// else into this handle's buffer; either way it stays valid until the next Receive or Detach on this handle.
    /// With <paramref name="nowait"/> an empty queue returns WouldBlock (a partly received message is kept).
    /// </summary>
    public ShmMqResult Receive(out ReadOnlySpan<byte> message, bool nowait = false)
    {
        ThrowIfNot(sender: false);
        message = default;
        // What the previous Receive returned is no longer needed: ReceiveBytes gives its space back once that is
        // worth a wake-up.
        ShmMqResult r;
        byte* p;
        long avail;
        if (!_lengthWordComplete)
        {
            r = ReceiveBytes(LengthWordSize, nowait, out avail, out p);
            if (r != ShmMqResult.Success)
                return r;
            long len = *(long*)p;
            if ((ulong)len > ShmMq.MaxMessageSize)
                throw new ShmMqCorruptException($"invalid message size {len} in shared memory queue (at byte {_bytesRead + _consumePending})");
            long needed = LengthWordSize + Align8(len);
            if (avail >= needed)
            {
                // All of it is here, in one piece: hand out the ring's bytes (zero copy).
                _consumePending += needed;
                message = new ReadOnlySpan<byte>(p + LengthWordSize, (int)len);
                _me.Counters.MqBytesReceived += len; // the meter's count (PgIpcMetrics.cs)
                return ShmMqResult.Success;
            }
            _expected = len;
            _recvPartial = 0;
            _lengthWordComplete = true;
            _consumePending += LengthWordSize;
        }

        long expected = _expected;
        long framed = Align8(expected);
        if (_recvPartial == 0)
        {
            r = ReceiveBytes(framed, nowait, out avail, out p);
            if (r != ShmMqResult.Success)
                return r;
            if (avail >= framed)
            {
                _consumePending += framed;
                _lengthWordComplete = false;
                message = new ReadOnlySpan<byte>(p, (int)expected);
                _me.Counters.MqBytesReceived += expected;
                return ShmMqResult.Success;
            }
            // It wraps round the ring: assemble it in the buffer.
            if (_buffer.Length < expected)
                GrowBuffer(expected);
            CopyOut(p, avail);
        }
        while (_recvPartial < framed)
        {
            r = ReceiveBytes(framed - _recvPartial, nowait, out avail, out p);
            if (r != ShmMqResult.Success)
                return r;
            CopyOut(p, Math.Min(avail, framed - _recvPartial));
        }
        _lengthWordComplete = false;
        _recvPartial = 0;
        message = new ReadOnlySpan<byte>(_buffer, 0, (int)expected);
        _me.Counters.MqBytesReceived += expected;
        return ShmMqResult.Success;
    }

    /// <summary>Copies <paramref name="n"/> consumed bytes of the current message (its padding is skipped) into the buffer.</summary>
    private void CopyOut(byte* p, long n)
    {
        long copy = Math.Min(n, _expected - _recvPartial);
        if (copy > 0)
            new ReadOnlySpan<byte>(p, (int)copy).CopyTo(_buffer.AsSpan((int)_recvPartial));
        _recvPartial += n;
        _consumePending += n;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GrowBuffer(long needed)
    {
        long size = (long)BitOperations.RoundUpToPowerOf2((ulong)Math.Max(needed, 1024));
        _buffer = new byte[Math.Min(size, Array.MaxLength)];
    }

    /// <summary>
    /// Waits until <paramref name="needed"/> bytes are readable or the readable bytes reach the ring's end
    /// (shm_mq_receive_bytes). On success <paramref name="avail"/> contiguous bytes start at <paramref name="data"/>.
    /// </summary>
    private ShmMqResult ReceiveBytes(long needed, bool nowait, out long avail, out byte* data)
    {
        long ring = _ringSize;
        bool spin = _spin;
        // Bytes consumed so far are done with (a previous message, or parts of this one already copied out): past a
        // quarter of the ring give them back, so a sender waiting in a long message goes on while we copy.
        if (_consumePending > (ring >> 2))
            PublishConsumed();
        for (;;)
        {
            // Acquire; pairs with the sender's release store in FlushPending: the bytes it covers are readable.
            long written = Volatile.Read(ref _h->BytesWritten);
            long read = _bytesRead + _consumePending; // our own counter (private: see the constructor)
            long used = written - read;
            long offset = read % ring;
            if (used >= needed || offset + used >= ring)
            {
                avail = Math.Min(used, ring - offset);
                data = _ring + offset;
                return ShmMqResult.Success;
            }
            if (used < 0)
                ThrowCounterCorrupt(written, read); // the sender's counter went back: corrupt (not on the fast path)
            // Detached is checked only after what is already here: a receiver drains a detached queue.
            if (Volatile.Read(ref _h->Detached) != 0)
            {
                // The sender publishes BytesWritten before it sets Detached; our acquire load of Detached above
                // orders this re-read after it, so a final publish is not missed.
                if (Volatile.Read(ref _h->BytesWritten) != written)
                    continue;
                avail = 0;
                data = null;
                return SawDetached();
            }
            if (_consumePending > 0)
                PublishConsumed();
            if (nowait)
            {
                avail = 0;
                data = null;
                return ShmMqResult.WouldBlock;
            }
            if (!WaitForPeer(&_h->BytesWritten, written, ReceiveWaitEvent, ref spin))
            {
                // The peer died; take what it managed to publish first.
                if (Volatile.Read(ref _h->BytesWritten) != written)
                    continue;
                avail = 0;
                data = null;
                return SawDetached();
            }
        }
    }

    private void PublishConsumed()
    {
        // Release: we are done with these bytes (read or copied out) before the sender may overwrite them;
        // pairs with the sender's acquire load of BytesRead (shm_mq_inc_bytes_read's barrier).
        _bytesRead += _consumePending;
        Volatile.Write(ref _h->BytesRead, _bytesRead);
        _consumePending = 0;
        WakePeer();
    }
}
