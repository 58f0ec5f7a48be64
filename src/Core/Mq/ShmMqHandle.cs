/*-------------------------------------------------------------------------
 * ShmMqHandle.cs
 *   One side's process-local handle on a queue (shm_mq_handle): its state,
 *   the spin-before-sleep settings, and helpers. The send path is in
 *   ShmMqHandle.Send.cs, the receive path in ShmMqHandle.Receive.cs,
 *   waiting and detach in ShmMqHandle.Wait.cs; the queue itself, its header
 *   and the attach path in ShmMq.cs.
 *
 * NOTES
 *   Batching. Neither side publishes every message. The sender accumulates
 *   SendPending and publishes it (and sets the receiver's latch) when it
 *   passes a quarter of the ring, when the caller asks to flush, or when it
 *   finds the ring full; the receiver accumulates ConsumePending the same
 *   way, publishing at the start of a Receive once past a quarter, or when
 *   it runs out of data. Because a consumed message is published only at the
 *   next Receive, the span Receive returns may point straight into the ring
 *   (zero copy) and stays valid until the handle's next Receive or Detach.
 *   A message longer than a quarter of the ring is also published at each
 *   wrap of the ring and whenever the sender runs out of space while
 *   writing it, and given back while it is copied out at the same points
 *   (shm_mq.c publishes it only when the ring is full); a piece is not cut
 *   at quarter boundaries, so a message written into an empty ring from
 *   offset 0 still goes in one piece.
 *
 *   Mirrors shm_mq_handle in src/backend/storage/ipc/shm_mq.c.
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
/// One side's process-local state for a queue (shm_mq_handle): partial-send and partial-receive progress, the
/// pending (unpublished) byte counts and the receive buffer. Used by its participant's thread only.
/// </summary>
public sealed unsafe partial class ShmMqHandle : IDisposable
{
    /// <summary>Longest sleep before the peer's liveness is checked again.</summary>
    internal const int PeerCheckIntervalMs = 1000;

    /// <summary>Shortest spin budget the adaptation goes down to, in microseconds.</summary>
    internal const int MinSpinMicroseconds = 1;

    /// <summary>Longest spin budget the adaptation goes up to, in microseconds (about one kernel wake-up here).</summary>
    internal const int MaxSpinMicroseconds = 32;

    /// <summary>A new handle's spin budget, in microseconds.</summary>
    internal const int InitialSpinMicroseconds = 8;

    /// <summary>How long a spin polls with only a CPU pause before it also yields the CPU between polls, in microseconds.</summary>
    internal const int PureSpinMicroseconds = 2;

    private const int SpinPollsPerClockRead = 4;
    private static readonly long s_pureSpinTicks = MicrosecondsToTicks(PureSpinMicroseconds);
    private static readonly long s_minSpinTicks = MicrosecondsToTicks(MinSpinMicroseconds);
    private static readonly long s_maxSpinTicks = MicrosecondsToTicks(MaxSpinMicroseconds);
    private static readonly long s_initialSpinTicks = MicrosecondsToTicks(InitialSpinMicroseconds);

    private const int LengthWordSize = sizeof(long);

    private readonly ShmMq _mq;
    private readonly ShmMqHeader* _h;
    private readonly byte* _ring;
    private readonly long _ringSize;
    private readonly Participant _me;
    private readonly IShmMqPeer? _peer;
    private readonly IProcessServices _processes;
    private readonly WaitEvents _waitEvents;
    private readonly bool _isSender;
    private int _peerProcNo = PgProc.InvalidProcNumber;
    private int _peerPid;

    // When the peer's liveness is next asked (Environment.TickCount64); 0: at the first sleep. This process only.
    private long _nextPeerCheck;
    private bool _detached;

    // Spinning before sleeping (this handle's thread only).
    private bool _spin = SpinByDefault;
    private long _spinTicks = s_initialSpinTicks; // adaptive budget, Stopwatch ticks, in [s_minSpinTicks, s_maxSpinTicks]

    // Sender state.
    private long _bytesWritten;      // the sender's counter (what it last stored to BytesWritten)
    private long _sendPending;       // bytes copied into the ring but not yet added to BytesWritten
    private long _sendPartial;       // framed bytes of the current message already in the ring
    private long _sendLength = -1;   // payload length of the message in flight, -1 when none

    // Receiver state.
    private long _bytesRead;         // the receiver's counter (what it last stored to BytesRead)
    private long _consumePending;    // bytes consumed but not yet added to BytesRead
    private bool _lengthWordComplete;
    private long _expected;          // payload length of the message being assembled
    private long _recvPartial;       // framed payload bytes (with padding) consumed of that message
    private byte[] _buffer = [];

    internal ShmMqHandle(ShmMq mq, Participant me, bool isSender, IShmMqPeer? peer, bool exitOnSupervisorDeath)
    {
        _mq = mq;
        _h = mq.Header;
        _ring = (byte*)_h + mq.RingOffsetValidated;
        _ringSize = mq.RingSizeValidated;
        // This side's counter is kept here and only stored to shared memory (one writer): a value scribbled there
        // later cannot move our ring position. The starting values are checked once: read <= written <= read + ring.
        long read = Volatile.Read(ref _h->BytesRead), written = Volatile.Read(ref _h->BytesWritten);
        if (read < 0 || written < read || written - read > _ringSize)
            throw new ShmemCorruptException("shm_mq header", "BytesRead / BytesWritten",
                $"{read} / {written} do not describe at most {_ringSize} bytes in flight");
        _bytesRead = read;
        _bytesWritten = written;
        _me = me;
        _isSender = isSender;
        _peer = peer;
        _processes = me.ProcArray.Segment.Platform.Processes;
        _waitEvents = WaitEvents.LatchSet | WaitEvents.Timeout | (exitOnSupervisorDeath ? WaitEvents.SupervisorDeath : WaitEvents.None);
    }

    /// <summary>The queue.</summary>
    public ShmMq Queue => _mq;

    /// <summary>True for the sender's handle.</summary>
    public bool IsSender => _isSender;

    /// <summary>Size of the receive buffer (grows only when a wrapped message needs more).</summary>
    public int ReceiveBufferSize => _buffer.Length;

    /// <summary>True where a new handle spins before sleeping: on a machine with more than one CPU.</summary>
    public static bool SpinByDefault => Environment.ProcessorCount > 1;

    /// <summary>
    /// Whether a blocking send or receive that must wait first spins for a few microseconds (an adaptive budget between
    /// <see cref="MinSpinMicroseconds"/> and <see cref="MaxSpinMicroseconds"/>) watching the peer's counter, and
    /// sleeps on the latch only if nothing came. Saves the kernel wake-ups of a busy stream; an idle peer still
    /// finds this side asleep. Default <see cref="SpinByDefault"/>; settable at any time by the handle's thread.
    /// </summary>
    public bool SpinBeforeSleep
    {
        get => _spin;
        set => _spin = value;
    }

    /// <summary>The current adaptive spin budget (diagnostics).</summary>
    public TimeSpan SpinBudget => Stopwatch.GetElapsedTime(0, _spinTicks);

    private void ThrowIfNot(bool sender)
    {
        if (_isSender != sender)
            throw new InvalidOperationException(sender ? "only the sender's handle can send" : "only the receiver's handle can receive");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Align8(long n) => (n + 7) & ~7L;

    /// <summary>The peer's counter says more than a ring in flight, or less than nothing: the header was overwritten.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowCounterCorrupt(long written, long read)
        => throw new ShmemCorruptException("shm_mq header", _isSender ? "BytesRead" : "BytesWritten",
            $"{(_isSender ? read : written)} leaves {written - read} bytes in flight in a ring of {_ringSize} (written {written}, read {read})");

    private static long MicrosecondsToTicks(int us) => Math.Max(1, (long)(us * (double)Stopwatch.Frequency / 1_000_000));
}
