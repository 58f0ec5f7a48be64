/*-------------------------------------------------------------------------
 * ShmMq.cs
 *   A single-reader, single-writer message queue in shared memory
 *   (PostgreSQL's shm_mq), waiting on participants' latches.
 *
 * NOTES
 *   The queue is a header and a byte ring. Two 64-bit counters only grow:
 *   BytesWritten (the sender's) and BytesRead (the receiver's); the ring
 *   position is counter % RingSize, the bytes in flight are their difference.
 *   A message is framed as an 8-byte length word, the payload, and padding to
 *   a multiple of 8; the ring size is a multiple of 8 too, so a length word
 *   always starts 8-aligned and never wraps. A message may be larger than the
 *   ring: it goes through in pieces, and the receiver assembles it.
 *
 *   Memory ordering (the pairs shm_mq.c documents):
 *     - the sender copies bytes into the ring, then release-stores the new
 *       BytesWritten; the receiver acquire-loads BytesWritten before reading
 *       the bytes it covers;
 *     - the receiver finishes reading (or copying out) bytes, then
 *       release-stores the new BytesRead; the sender acquire-loads BytesRead
 *       before overwriting the space it frees.
 *   Each counter has one writer, so its update is a load of our own value
 *   and a release store, no read-modify-write.
 *
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
 *   A message that wraps round the ring is copied into a per-handle buffer,
 *   grown to the next power of two only when a larger message arrives.
 *
 *   Waiting. A side that cannot progress publishes what it has pending, sets
 *   its peer's latch, then sleeps on its own latch; after waking it resets
 *   the latch and re-checks, so a wake-up between the check and the sleep is
 *   never lost (the latch stays set).
 *
 *   Spinning (not in shm_mq.c). With SpinBeforeSleep (default: more than
 *   one CPU) a side that must wait first polls the peer's counter for a few
 *   microseconds, after it has published and set the peer's latch, so the
 *   protocol above is unchanged: a spinner is not in the kernel, so setting
 *   its latch costs the peer no system call, and a spinner that gives up
 *   sleeps as before. After the first PureSpinMicroseconds it yields the
 *   CPU between polls (sched_yield / SwitchToThread): on an oversubscribed
 *   machine the peer is often queued on the spinner's own CPU, where a pure
 *   spin only delays it (measured here: several times slower than not
 *   spinning at all). The budget adapts per handle as s_lock's
 *   spins_per_delay does: doubled (up to MaxSpinMicroseconds) when the
 *   counter moved in time, or when a sleep ended with progress sooner than
 *   that; an eighth off (down to MinSpinMicroseconds) when it did not. A
 *   blocking call spins again only after a sleep that ended with progress,
 *   never after a timeout, so an idle peer costs one budget of spinning and
 *   then a sleep.
 *
 *   Sleeps are bounded (1 s) so that a peer that died without detaching is
 *   noticed: before each sleep the handle asks the optional IShmMqPeer (for
 *   a peer that has not attached yet, e.g. a background worker that failed
 *   to start) and checks the pid the peer recorded when it attached. A dead
 *   peer reads as Detached.
 *
 *   Detach (either side) sets the Detached flag under the spinlock and sets
 *   the peer's latch; a sender first publishes its pending bytes, and a
 *   receiver that sees Detached re-reads BytesWritten so it still drains
 *   everything sent before the detach.
 *
 *   Mirrors src/backend/storage/ipc/shm_mq.c and include/storage/shm_mq.h.
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

/// <summary>What a send or receive did.</summary>
public enum ShmMqResult
{
    /// <summary>The whole message was sent or received.</summary>
    Success,
    /// <summary>Nowait and the operation could not complete; call again (with the same message, for a send).</summary>
    WouldBlock,
    /// <summary>The other side detached (or died); nothing more will come through.</summary>
    Detached,
}

/// <summary>
/// Tells a handle whether its counterparty still lives, for a peer that may never attach or may die without
/// detaching (a background worker handle, a child process). Called before each sleep; must be cheap and must not throw.
/// </summary>
public interface IShmMqPeer
{
    bool IsAlive { get; }
}

/// <summary>A peer known by its process id.</summary>
public sealed class ShmMqProcessPeer(IProcessServices processes, int pid) : IShmMqPeer
{
    // An unreaped zombie counts as alive until reaped (kill(pid, 0)'s view).
    public bool IsAlive => processes.GetLiveness(pid) != ProcessLiveness.Gone;
}

/// <summary>The queue's shared memory looks corrupt (a message length no sender could have written).</summary>
public sealed class ShmMqCorruptException(string message) : PgIpcException(message);

/// <summary>
/// The queue header. Layout (bytes) and protectors:
/// <code>
///   0  Mutex          the spinlock word (SLock)
///   4  ReceiverProcNo Mutex; set once (-1 until SetReceiver), read lock-free with an acquire load afterwards
///   8  SenderProcNo   Mutex; set once (-1 until SetSender), likewise
///  12  Detached       written under Mutex (0 -> 1 once); read lock-free with an acquire load
///  16  RingSize       immutable after Create (a multiple of 8)
///  24  RingOffset     immutable after Create (bytes from the header to the ring)
///  32  ReceiverPid    Mutex; set with ReceiverProcNo (liveness checks)
///  36  SenderPid      Mutex; set with SenderProcNo
///  40  Magic          immutable; written last by Create (release)
///  64  BytesRead      the receiver only: release store after it is done with the bytes; the sender acquire-loads
/// 128  BytesWritten   the sender only: release store after copying the bytes; the receiver acquire-loads
/// 192  ring follows
/// </code>
/// The counters sit on cache lines of their own, away from each other and from the control fields.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 192)]
public struct ShmMqHeader
{
    public const uint MagicValue = 0x514D4853; // "SHMQ"

    [FieldOffset(0)] public int Mutex;
    [FieldOffset(4)] public int ReceiverProcNo;
    [FieldOffset(8)] public int SenderProcNo;
    [FieldOffset(12)] public int Detached;
    [FieldOffset(16)] public long RingSize;
    [FieldOffset(24)] public long RingOffset;
    [FieldOffset(32)] public int ReceiverPid;
    [FieldOffset(36)] public int SenderPid;
    [FieldOffset(40)] public uint Magic;
    [FieldOffset(64)] public long BytesRead;
    [FieldOffset(128)] public long BytesWritten;
}

/// <summary>
/// This process's view of a queue in shared memory (a shm_mq pointer). Create it once, set the receiver and the
/// sender (each side sets itself), then each side calls <see cref="Attach"/> for its handle.
/// </summary>
public sealed unsafe class ShmMq
{
    /// <summary>Largest message (1 GiB - 1, PostgreSQL's MaxAllocSize).</summary>
    public const long MaxMessageSize = 0x3FFF_FFFF;

    /// <summary>Bytes of the header before the ring.</summary>
    public static int HeaderSize => sizeof(ShmMqHeader);

    /// <summary>Smallest ring.</summary>
    public const int MinRingSize = 16;

    internal readonly ShmMqHeader* Header;

    private ShmMq(ShmMqHeader* header) => Header = header;

    /// <summary>Bytes a queue with a ring of <paramref name="ringSize"/> bytes needs.</summary>
    public static long SizeFor(long ringSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(ringSize, MinRingSize);
        return ShmemSize.Add(sizeof(ShmMqHeader), ShmemSize.AlignUp(ringSize, 8));
    }

    /// <summary>Ring size in bytes.</summary>
    public long RingSize => Header->RingSize;

    /// <summary>Procno of the receiver, or -1.</summary>
    public int ReceiverProcNumber => Volatile.Read(ref Header->ReceiverProcNo);

    /// <summary>Procno of the sender, or -1.</summary>
    public int SenderProcNumber => Volatile.Read(ref Header->SenderProcNo);

    /// <summary>True once either side detached.</summary>
    public bool IsDetached => Volatile.Read(ref Header->Detached) != 0;

    // ------------------------------------------------------------------
    // Create / open
    // ------------------------------------------------------------------

    /// <summary>Creates a queue filling <paramref name="region"/> (shm_mq_create).</summary>
    public static ShmMq Create(ShmemRegion region) => Create(region.Pointer, region.Size);

    /// <summary>Creates a queue filling a toc chunk.</summary>
    public static ShmMq Create(ShmTocChunk chunk) => Create(chunk.Pointer, chunk.Size);

    /// <summary>The queue another process created in <paramref name="region"/>.</summary>
    public static ShmMq Open(ShmemRegion region) => Open(region.Pointer, region.Size);

    /// <summary>The queue another process created in a toc chunk.</summary>
    public static ShmMq Open(ShmTocChunk chunk) => Open(chunk.Pointer, chunk.Size);

    internal static ShmMq Create(byte* address, long size)
    {
        if (address == null || ((nint)address & 7) != 0)
            throw new ArgumentException("a shm_mq must start at a non-null 8-byte aligned address", nameof(address));
        long ring = (size - sizeof(ShmMqHeader)) & ~7L;
        if (ring < MinRingSize)
            throw new ArgumentOutOfRangeException(nameof(size), size, $"a shm_mq needs at least {sizeof(ShmMqHeader) + MinRingSize} bytes (header {sizeof(ShmMqHeader)}, ring {MinRingSize})");
        ShmMqHeader* h = (ShmMqHeader*)address;
        SLock.Init(ref h->Mutex);
        h->ReceiverProcNo = PgProc.InvalidProcNumber;
        h->SenderProcNo = PgProc.InvalidProcNumber;
        h->ReceiverPid = 0;
        h->SenderPid = 0;
        h->Detached = 0;
        h->RingSize = ring;
        h->RingOffset = sizeof(ShmMqHeader);
        h->BytesRead = 0;
        h->BytesWritten = 0;
        // Publish last; pairs with the acquire load in Open.
        Volatile.Write(ref h->Magic, ShmMqHeader.MagicValue);
        return new ShmMq(h);
    }

    internal static ShmMq Open(byte* address, long size)
    {
        if (address == null || size < sizeof(ShmMqHeader))
            throw new ArgumentException($"region of {size} bytes cannot hold a shm_mq", nameof(size));
        ShmMqHeader* h = (ShmMqHeader*)address;
        // Acquire; pairs with the release store of Magic in Create.
        uint magic = Volatile.Read(ref h->Magic);
        if (magic != ShmMqHeader.MagicValue)
            throw new ShmMqCorruptException($"no shm_mq at this address: magic 0x{magic:x8}, expected 0x{ShmMqHeader.MagicValue:x8}");
        if (h->RingOffset != sizeof(ShmMqHeader) || h->RingSize < MinRingSize || h->RingSize > size - h->RingOffset || (h->RingSize & 7) != 0)
            throw new ShmMqCorruptException($"shm_mq header says ring {h->RingSize} bytes at +{h->RingOffset}, region is {size} bytes");
        return new ShmMq(h);
    }

    // ------------------------------------------------------------------
    // Sides
    // ------------------------------------------------------------------

    /// <summary>Makes <paramref name="me"/> the receiver (shm_mq_set_receiver). Once per queue; wakes a waiting sender.</summary>
    public void SetReceiver(Participant me) => SetSide(me, receiver: true);

    /// <summary>Makes <paramref name="me"/> the sender (shm_mq_set_sender). Once per queue; wakes a waiting receiver.</summary>
    public void SetSender(Participant me) => SetSide(me, receiver: false);

    private void SetSide(Participant me, bool receiver)
    {
        ArgumentNullException.ThrowIfNull(me);
        ShmMqHeader* h = Header;
        int pid = me.ProcArray.Segment.Platform.Processes.CurrentProcessId;
        SLock.Acquire(ref h->Mutex, "ShmMq.SetSide");
        ref int mine = ref receiver ? ref h->ReceiverProcNo : ref h->SenderProcNo;
        int already = mine;
        int other = receiver ? h->SenderProcNo : h->ReceiverProcNo;
        if (already == PgProc.InvalidProcNumber)
        {
            if (receiver)
                h->ReceiverPid = pid;
            else
                h->SenderPid = pid;
            // Release; pairs with the acquire loads of the procno in the handles (pid before procno).
            Volatile.Write(ref mine, me.ProcNumber);
        }
        SLock.Release(ref h->Mutex);
        if (already != PgProc.InvalidProcNumber)
            throw new InvalidOperationException($"shm_mq already has a {(receiver ? "receiver" : "sender")} (participant {already})");
        if (other != PgProc.InvalidProcNumber)
            Latches.SetLatch(me.ProcArray, other);
    }

    /// <summary>
    /// The handle through which <paramref name="me"/> (the queue's sender or receiver) uses the queue (shm_mq_attach).
    /// <paramref name="peer"/> reports whether the counterparty still lives (optional; the pid it records on attach
    /// is checked too).
    /// </summary>
    public ShmMqHandle Attach(Participant me, IShmMqPeer? peer = null, bool exitOnSupervisorDeath = true)
    {
        ArgumentNullException.ThrowIfNull(me);
        bool receiver = ReceiverProcNumber == me.ProcNumber, sender = SenderProcNumber == me.ProcNumber;
        if (receiver && sender)
            throw new InvalidOperationException($"participant {me.ProcNumber} is both sender and receiver of this shm_mq: use AttachAsSender / AttachAsReceiver");
        if (!receiver && !sender)
            throw new InvalidOperationException($"participant {me.ProcNumber} is neither the sender ({SenderProcNumber}) nor the receiver ({ReceiverProcNumber}) of this shm_mq");
        return new ShmMqHandle(this, me, sender, peer, exitOnSupervisorDeath);
    }

    /// <summary>The sender's handle; <paramref name="me"/> must be the sender (it may also be the receiver: a loopback queue).</summary>
    public ShmMqHandle AttachAsSender(Participant me, IShmMqPeer? peer = null, bool exitOnSupervisorDeath = true)
        => AttachSide(me, isSender: true, peer, exitOnSupervisorDeath);

    /// <summary>The receiver's handle; <paramref name="me"/> must be the receiver.</summary>
    public ShmMqHandle AttachAsReceiver(Participant me, IShmMqPeer? peer = null, bool exitOnSupervisorDeath = true)
        => AttachSide(me, isSender: false, peer, exitOnSupervisorDeath);

    private ShmMqHandle AttachSide(Participant me, bool isSender, IShmMqPeer? peer, bool exitOnSupervisorDeath)
    {
        ArgumentNullException.ThrowIfNull(me);
        int side = isSender ? SenderProcNumber : ReceiverProcNumber;
        if (side != me.ProcNumber)
            throw new InvalidOperationException($"participant {me.ProcNumber} is not the {(isSender ? "sender" : "receiver")} ({side}) of this shm_mq");
        return new ShmMqHandle(this, me, isSender, peer, exitOnSupervisorDeath);
    }

    /// <summary>Sets Detached and returns the other side's procno (or -1).</summary>
    internal int MarkDetached(bool bySender)
    {
        ShmMqHeader* h = Header;
        SLock.Acquire(ref h->Mutex, "ShmMq.Detach");
        // Release; pairs with the acquire loads of Detached in the handles.
        Volatile.Write(ref h->Detached, 1);
        int victim = bySender ? h->ReceiverProcNo : h->SenderProcNo;
        SLock.Release(ref h->Mutex);
        return victim;
    }

    public override string ToString()
        => $"shm_mq ring {RingSize} bytes, sender {SenderProcNumber}, receiver {ReceiverProcNumber}{(IsDetached ? ", detached" : "")}";
}

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

/// <summary>
/// One side's process-local state for a queue (shm_mq_handle): partial-send and partial-receive progress, the
/// pending (unpublished) byte counts and the receive buffer. Used by its participant's thread only.
/// </summary>
public sealed unsafe class ShmMqHandle : IDisposable
{
    /// <summary>Longest sleep before the peer's liveness is checked again.</summary>
    public const int PeerCheckIntervalMs = 1000;

    /// <summary>Shortest spin budget the adaptation goes down to, in microseconds.</summary>
    public const int MinSpinMicroseconds = 1;

    /// <summary>Longest spin budget the adaptation goes up to, in microseconds (about one kernel wake-up here).</summary>
    public const int MaxSpinMicroseconds = 32;

    /// <summary>A new handle's spin budget, in microseconds.</summary>
    public const int InitialSpinMicroseconds = 8;

    /// <summary>How long a spin polls with only a CPU pause before it also yields the CPU between polls, in microseconds.</summary>
    public const int PureSpinMicroseconds = 2;

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
    private bool _detached;

    // Spinning before sleeping (this handle's thread only).
    private bool _spin = SpinByDefault;
    private long _spinTicks = s_initialSpinTicks; // adaptive budget, Stopwatch ticks, in [s_minSpinTicks, s_maxSpinTicks]

    // Sender state.
    private long _sendPending;       // bytes copied into the ring but not yet added to BytesWritten
    private long _sendPartial;       // framed bytes of the current message already in the ring
    private long _sendLength = -1;   // payload length of the message in flight, -1 when none

    // Receiver state.
    private long _consumePending;    // bytes consumed but not yet added to BytesRead
    private bool _lengthWordComplete;
    private long _expected;          // payload length of the message being assembled
    private long _recvPartial;       // framed payload bytes (with padding) consumed of that message
    private byte[] _buffer = [];

    internal ShmMqHandle(ShmMq mq, Participant me, bool isSender, IShmMqPeer? peer, bool exitOnSupervisorDeath)
    {
        _mq = mq;
        _h = mq.Header;
        _ring = (byte*)_h + _h->RingOffset;
        _ringSize = _h->RingSize;
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
            long wb = _h->BytesWritten + _sendPending; // our own counter: a plain load sees our last store
            long available = ring - (wb - rb);
            if (Volatile.Read(ref _h->Detached) != 0)
                return SawDetached();
            if (available == 0)
            {
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
        Volatile.Write(ref _h->BytesWritten, _h->BytesWritten + _sendPending);
        _sendPending = 0;
        WakePeer();
    }

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
                throw new ShmMqCorruptException($"invalid message size {len} in shared memory queue (at byte {_h->BytesRead + _consumePending})");
            long needed = LengthWordSize + Align8(len);
            if (avail >= needed)
            {
                // All of it is here, in one piece: hand out the ring's bytes (zero copy).
                _consumePending += needed;
                message = new ReadOnlySpan<byte>(p + LengthWordSize, (int)len);
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
            long read = _h->BytesRead + _consumePending; // our own counter
            long used = written - read;
            long offset = read % ring;
            if (used >= needed || offset + used >= ring)
            {
                avail = Math.Min(used, ring - offset);
                data = _ring + offset;
                return ShmMqResult.Success;
            }
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
        Volatile.Write(ref _h->BytesRead, _h->BytesRead + _consumePending);
        _consumePending = 0;
        WakePeer();
    }

    // ------------------------------------------------------------------
    // Waiting, peers, detach
    // ------------------------------------------------------------------

    /// <summary>The wait event a sender shows in its slot while it sleeps for space (MessageQueueSend).</summary>
    public const uint SendWaitEvent = 0x0A00_0001;

    /// <summary>The wait event a receiver shows in its slot while it sleeps for data (MessageQueueReceive). A spin shows none.</summary>
    public const uint ReceiveWaitEvent = 0x0A00_0002;

    /// <summary>
    /// Waits for the peer to move <paramref name="counter"/> (its own: BytesWritten for a receiver, BytesRead for a
    /// sender) away from <paramref name="seen"/>, or to detach: first a bounded spin when <paramref name="spin"/>,
    /// then one sleep on our latch. The caller re-checks either way (a wake-up may be early or redundant). False when
    /// the peer is gone. The caller has published its own progress and set the peer's latch before calling.
    /// </summary>
    private bool WaitForPeer(long* counter, long seen, uint waitEvent, ref bool spin)
    {
        long spinStart = 0;
        if (spin)
        {
            if (SpinUntilMoved(counter, seen, out spinStart))
                return true;
            // Sleep now. Spin again in this call only after a sleep that ended with the peer's progress: not after a
            // timeout (an idle peer) nor after a latch left set earlier (which returns at once without progress).
            spin = false;
        }
        if (!Sleep(waitEvent))
            return false;
        // Acquire; pairs with the peer's release store of the counter (FlushPending / PublishConsumed).
        if (_spin && Volatile.Read(ref *counter) != seen)
        {
            spin = true;
            // Progress came soon after a spin gave up: a budget of MaxSpin would have caught it (the wake-up's own
            // latency only makes this test stricter), so count it as a success.
            if (spinStart != 0 && Stopwatch.GetTimestamp() - spinStart < s_maxSpinTicks)
                _spinTicks = Math.Min(s_maxSpinTicks, _spinTicks * 2);
        }
        return true;
    }

    /// <summary>
    /// Polls <paramref name="counter"/> until it differs from <paramref name="seen"/> or the queue is detached, for at
    /// most this handle's budget; adapts the budget (doubled after a success, an eighth off after a failure).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool SpinUntilMoved(long* counter, long seen, out long start)
    {
        start = Stopwatch.GetTimestamp();
        long budget = _spinTicks;
        while (true)
        {
            for (int i = 0; i < SpinPollsPerClockRead; i++)
            {
                // Acquire; pairs with the peer's release store of the counter (FlushPending / PublishConsumed) and
                // with MarkDetached's release store of Detached. A plain read loop: the line stays shared in our
                // cache until the peer writes it, so polling costs the peer nothing.
                if (Volatile.Read(ref *counter) != seen || Volatile.Read(ref _h->Detached) != 0)
                {
                    _spinTicks = Math.Min(s_maxSpinTicks, budget * 2);
                    return true;
                }
                CpuPause();
            }
            long elapsed = Stopwatch.GetTimestamp() - start;
            if (elapsed >= budget)
            {
                _spinTicks = Math.Max(s_minSpinTicks, budget - (budget >> 3));
                return false;
            }
            // Past the first microseconds, offer the CPU between polls: on a busy machine the peer may be waiting for
            // this very CPU, and a pure spin would only delay it. With nothing else runnable this returns at once.
            if (elapsed >= s_pureSpinTicks)
                Thread.Yield();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CpuPause()
    {
        if (X86Base.IsSupported)
            X86Base.Pause();
        else if (ArmBase.IsSupported)
            ArmBase.Yield();
        else
            Thread.SpinWait(1);
    }

    /// <summary>Sleeps on our latch up to PeerCheckIntervalMs; false when the peer is gone (never throws for that).</summary>
    private bool Sleep(uint waitEvent)
    {
        if (!PeerAlive())
            return false;
        WaitEvents got = _me.WaitLatch(_waitEvents, PeerCheckIntervalMs, waitEvent);
        if ((got & WaitEvents.SupervisorDeath) != 0)
            throw new PgIpcException("the supervisor died while this participant waited on a shared memory queue");
        _me.ResetLatch();
        return true;
    }

    private bool PeerAlive()
    {
        if (_peer is not null && !_peer.IsAlive)
            return false;
        int procno = PeerProcNo();
        if (procno == PgProc.InvalidProcNumber)
            return true;
        if (_peerPid == 0)
            _peerPid = Volatile.Read(ref (_isSender ? ref _h->ReceiverPid : ref _h->SenderPid));
        // An unreaped zombie peer counts as attached until reaped (kill(pid, 0)'s view).
        return _peerPid == 0 || _processes.GetLiveness(_peerPid) != ProcessLiveness.Gone;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int PeerProcNo()
    {
        int p = _peerProcNo;
        if (p == PgProc.InvalidProcNumber)
        {
            // While the peer is not known to be attached: a full barrier between our counter's store (just before a
            // WakePeer) and this load. The attaching peer stores its procno, fences, then reads our counter (SetSide);
            // without the barrier our store could still sit in the store buffer while we read -1 and wake nobody, and
            // the peer would sleep until its next timeout (PostgreSQL reads mq_receiver under mq_mutex for the same
            // reason). Once known, the procno is cached and the barrier is gone.
            Interlocked.MemoryBarrier();
            // Acquire; pairs with the release store in ShmMq.SetSide. Set once, so it is cached from then on.
            p = Volatile.Read(ref (_isSender ? ref _h->ReceiverProcNo : ref _h->SenderProcNo));
            _peerProcNo = p;
        }
        return p;
    }

    private void WakePeer()
    {
        int p = PeerProcNo();
        if (p != PgProc.InvalidProcNumber)
            Latches.SetLatch(_me.ProcArray, p);
    }

    private ShmMqResult SawDetached()
    {
        _detached = true;
        return ShmMqResult.Detached;
    }

    /// <summary>
    /// Detaches this side (shm_mq_detach): a sender first publishes what it holds back; the peer is woken and sees
    /// Detached once it has drained what was sent. Idempotent.
    /// </summary>
    public void Detach()
    {
        if (_isSender && _sendPending > 0)
            FlushPending();
        _detached = true;
        int victim = _mq.MarkDetached(_isSender);
        if (victim != PgProc.InvalidProcNumber)
            Latches.SetLatch(_me.ProcArray, victim);
    }

    public void Dispose() => Detach();

    private void ThrowIfNot(bool sender)
    {
        if (_isSender != sender)
            throw new InvalidOperationException(sender ? "only the sender's handle can send" : "only the receiver's handle can receive");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Align8(long n) => (n + 7) & ~7L;

    private static long MicrosecondsToTicks(int us) => Math.Max(1, (long)(us * (double)Stopwatch.Frequency / 1_000_000));
}
