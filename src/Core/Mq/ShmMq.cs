/*-------------------------------------------------------------------------
 * ShmMq.cs
 *   A single-reader, single-writer message queue in shared memory
 *   (PostgreSQL's shm_mq), waiting on participants' latches: the header,
 *   create / open, setting the sides and attaching a handle. Each side's
 *   handle (ShmMqHandle.cs) holds the send, receive and wait paths.
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
 *   and a release store, no read-modify-write. "Our own value" is kept in
 *   the handle (ShmMqHandle's _bytesRead / _bytesWritten), never re-read
 *   from the header: a scribbled counter cannot move this side's position
 *   in the ring. The ring's size and place are checked once (Create, Open)
 *   and cached; the peer's counter is checked where a wait begins (a
 *   receiver whose sender's counter went back, a sender whose receiver's
 *   counter ran ahead), which the fast path's existing test covers.
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
    /// <summary>False once the peer is known to be gone.</summary>
    bool IsAlive { get; }
}

/// <summary>A peer known by its process id.</summary>
public sealed class ShmMqProcessPeer(IProcessServices processes, int pid) : IShmMqPeer
{
    // An unreaped zombie counts as alive until reaped (kill(pid, 0)'s view).
    /// <inheritdoc/>
    public bool IsAlive => processes.GetLiveness(pid) != ProcessLiveness.Gone;
}

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
internal struct ShmMqHeader
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
    internal static int HeaderSize => sizeof(ShmMqHeader);

    /// <summary>Smallest ring.</summary>
    public const int MinRingSize = 16;

    internal readonly ShmMqHeader* Header;

    // The ring's place and size, checked once at Create / Open and used from here on (the shared copies are another
    // process's word: a handle never re-reads them).
    internal readonly long RingOffsetValidated;
    internal readonly long RingSizeValidated;

    private ShmMq(ShmMqHeader* header, long ringOffset, long ringSize)
    {
        Header = header;
        RingOffsetValidated = ringOffset;
        RingSizeValidated = ringSize;
    }

    /// <summary>Bytes a queue with a ring of <paramref name="ringSize"/> bytes needs.</summary>
    public static long SizeFor(long ringSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(ringSize, MinRingSize);
        return ShmemSize.Add(sizeof(ShmMqHeader), ShmemSize.AlignUp(ringSize, 8));
    }

    /// <summary>Ring size in bytes.</summary>
    public long RingSize => RingSizeValidated;

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
        return new ShmMq(h, sizeof(ShmMqHeader), ring);
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
        // Each read once: the values checked are the values used.
        long ringOffset = h->RingOffset, ringSize = h->RingSize;
        if (ringOffset != sizeof(ShmMqHeader))
            throw new ShmemCorruptException("shm_mq header", "RingOffset", $"+{ringOffset} is not +{sizeof(ShmMqHeader)}, the first byte after the header");
        if (ringSize < MinRingSize || ringSize > size - ringOffset || (ringSize & 7) != 0)
            throw new ShmemCorruptException("shm_mq header", "RingSize", $"{ringSize} bytes at +{ringOffset} is not a multiple of 8 between {MinRingSize} and the region's {size} bytes less the header");
        return new ShmMq(h, ringOffset, ringSize);
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

    /// <inheritdoc/>
    public override string ToString()
        => $"shm_mq ring {RingSize} bytes, sender {SenderProcNumber}, receiver {ReceiverProcNumber}{(IsDetached ? ", detached" : "")}";
}
