/*-------------------------------------------------------------------------
 * ShmMqPieces.cs
 *   The pieces of one message to send: a stack-only view over the caller's
 *   spans that copies any byte range of their concatenation.
 *
 * NOTES
 *   Send, the two-span Send and SendV all become one ShmMqPieces, so that
 *   the send path frames and copies one way whatever the caller passed.
 *
 *   Plays the part of shm_mq_iovec in shm_mq_sendv
 *   (src/backend/storage/ipc/shm_mq.c).
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

/// <summary>
/// The pieces of one message for <see cref="ShmMqHandle.SendV(ReadOnlySpan{ReadOnlyMemory{byte}}, bool, bool)"/>
/// and the two-span Send; a view over the caller's buffers, on the stack.
/// </summary>
internal readonly ref struct ShmMqPieces
{
    private readonly ReadOnlySpan<byte> _a;
    private readonly ReadOnlySpan<byte> _b;
    private readonly ReadOnlySpan<ReadOnlyMemory<byte>> _rest;

    public ShmMqPieces(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, ReadOnlySpan<ReadOnlyMemory<byte>> rest)
    {
        _a = a;
        _b = b;
        _rest = rest;
        long len = (long)a.Length + b.Length;
        foreach (ReadOnlyMemory<byte> m in rest)
            len += m.Length;
        Length = len;
    }

    public long Length { get; }

    /// <summary>Copies payload bytes [from, from + dest.Length) into <paramref name="dest"/>.</summary>
    public void CopyTo(long from, Span<byte> dest)
    {
        if (from < _a.Length)
        {
            int n = (int)Math.Min(_a.Length - from, dest.Length);
            _a.Slice((int)from, n).CopyTo(dest);
            dest = dest[n..];
            from = 0;
        }
        else
        {
            from -= _a.Length;
        }
        if (dest.IsEmpty)
            return;
        if (from < _b.Length)
        {
            int n = (int)Math.Min(_b.Length - from, dest.Length);
            _b.Slice((int)from, n).CopyTo(dest);
            dest = dest[n..];
            from = 0;
        }
        else
        {
            from -= _b.Length;
        }
        for (int i = 0; i < _rest.Length && !dest.IsEmpty; i++)
        {
            ReadOnlySpan<byte> s = _rest[i].Span;
            if (from >= s.Length)
            {
                from -= s.Length;
                continue;
            }
            int n = (int)Math.Min(s.Length - from, dest.Length);
            s.Slice((int)from, n).CopyTo(dest);
            dest = dest[n..];
            from = 0;
        }
    }
}
