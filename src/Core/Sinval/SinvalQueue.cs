/*-------------------------------------------------------------------------
 * SinvalQueue.cs
 *   The shared invalidation queue: every participant that caches shared
 *   state broadcasts "this changed" messages and consumes everyone else's.
 *
 * NOTES
 *   One ring of MaxNumMessages messages, numbered by two counters:
 *   maxMsgNum (the next number to write) and minMsgNum (the oldest message
 *   some reader still needs). Each registered participant (a reader) has a
 *   ProcState slot, indexed by its procno, holding nextMsgNum, the next
 *   message it will read. Senders never wait for readers: a reader that
 *   falls too far behind loses its place and is told so ("reset"), after
 *   which it must throw away everything it cached and rebuild (the
 *   onReset callback).
 *
 *   Sending and receiving (SIInsertDataEntries, SIGetDataEntries, with the
 *   ordering argument) are in SinvalQueue.Messages.cs; the cleanup, the
 *   catch-up daisy chain and wraparound in SinvalQueue.Cleanup.cs. This
 *   file: sizing and initialisation, registration of readers, inspection.
 *
 *   PgIpc differences. Participants are threads, so a participant that
 *   leaves without UnregisterBackend would leave a registration behind: the
 *   ProcState remembers the PgProc generation it registered with, and a
 *   registration whose slot has been given back or handed out again is
 *   treated as gone (by Register and by the cleanup). ForgetSlot drops the
 *   registration of a participant whose process died (the supervisor calls
 *   it when it reclaims the slot). ProcSignal is not implemented here: the
 *   queue calls CatchupSignal(procno, pid) and exposes CatchupPending.
 *
 *   Mirrors src/backend/storage/ipc/sinvaladt.c (SInvalShmemSize,
 *   SharedInvalShmemInit, SharedInvalBackendInit, CleanupInvalidationState).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sync;
using static PgIpc.Sinval.SinvalConstants;

namespace PgIpc.Sinval;

/// <summary>One reader as seen by <see cref="SinvalQueue.GetStatistics"/>.</summary>
public sealed record SinvalReaderInfo(
    int ProcNumber, int Pid, int NextMsgNum, bool ResetPending, bool Signaled, bool HasMessages, bool SendOnly);

/// <summary>A snapshot of the queue (read without locks: fields may be from slightly different instants).</summary>
public sealed record SinvalStatistics(
    int MinMsgNum, int MaxMsgNum, int NextThreshold, int LastBackend, long ResetsIssued, long SignalsSent,
    IReadOnlyList<SinvalReaderInfo> Readers);

/// <summary>The shared invalidation queue of a cluster, as mapped in this process.</summary>
public sealed unsafe partial class SinvalQueue
{
    /// <summary>Name of the structure in the ShmemIndex.</summary>
    internal const string ShmemName = "PgIpc.SInvalSeg";

    private static readonly ConditionalWeakTable<ShmemSegment, SinvalQueue> s_bySegment = new();
    private static readonly Lock s_registryLock = new();

    private readonly ShmemSegment _segment;
    private readonly ProcArray _procs;
    private readonly SISegHeader* _seg;
    private readonly SharedInvalidationMessage* _ring;
    private readonly ProcState* _states;
    private readonly LWLock* _writeLock;
    private readonly LWLock* _readLock;
    private readonly LocalReceiver?[] _local;
    private volatile Action<int, int>? _catchupSignal;
    private int _closed;

    /// <summary>Process-local receive state of one slot (sinval.c's static messages[], nextmsg, nummsgs).</summary>
    private sealed class LocalReceiver
    {
        public readonly SharedInvalidationMessage[] Buffer = new SharedInvalidationMessage[ReceiveBatch];
        public int Next;
        public int Count;
        /// <summary>A read cleared this slot's signaled flag: ReceiveAll passes the catch-up signal on.</summary>
        public bool CatchupSeen;
    }

    private SinvalQueue(ShmemSegment segment, ProcArray procs, SISegHeader* seg)
    {
        _segment = segment;
        _procs = procs;
        _seg = seg;
        _ring = (SharedInvalidationMessage*)((byte*)seg + sizeof(SISegHeader));
        _states = (ProcState*)(_ring + MaxNumMessages);
        _writeLock = &seg->WriteLock.Lock;
        _readLock = &seg->ReadLock.Lock;
        MaxProcs = seg->MaxProcs;
        _local = new LocalReceiver?[MaxProcs];
    }

    /// <summary>Bytes <see cref="Init"/> takes from the segment for <paramref name="maxProcs"/> participant slots (SInvalShmemSize).</summary>
    internal static long ShmemSize(int maxProcs)
    {
        if (maxProcs < 1 || maxProcs > ProcArray.MaxProcsLimit)
            throw new ArgumentOutOfRangeException(nameof(maxProcs), maxProcs, $"the queue needs 1..{ProcArray.MaxProcsLimit} reader slots");
        long size = Shmem.ShmemSize.Add(sizeof(SISegHeader), Shmem.ShmemSize.Mul(MaxNumMessages, sizeof(SharedInvalidationMessage)));
        return Shmem.ShmemSize.Add(size, Shmem.ShmemSize.Mul(maxProcs, sizeof(ProcState)));
    }

    /// <summary>
    /// Finds the queue in <paramref name="segment"/>, or creates it (found = false) with one reader slot per slot of
    /// <paramref name="procs"/> (SharedInvalShmemInit). Returns this process's one view of it.
    /// </summary>
    internal static SinvalQueue Init(ShmemSegment segment, ProcArray procs, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(procs);
        if (procs.Segment != segment)
            throw new ArgumentException("the participant slot array belongs to another segment", nameof(procs));
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(segment, out SinvalQueue? existing) && existing._closed == 0)
            {
                found = true;
                return existing;
            }
        }
        int maxProcs = procs.MaxProcs;
        ShmemRegion region = segment.InitStruct(ShmemName, ShmemSize(maxProcs), r => Initialize(r, maxProcs), out found);
        var seg = (SISegHeader*)region.Pointer;
        if (seg->Magic != SISegHeader.MagicValue)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is not initialised (magic 0x{seg->Magic:x8})");
        if (seg->RingSize != MaxNumMessages || seg->MaxProcs != maxProcs)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} has {seg->RingSize} messages and {seg->MaxProcs} reader slots; this build expects {MaxNumMessages} and {maxProcs}");
        var queue = new SinvalQueue(segment, procs, seg);
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(segment, out SinvalQueue? raced) && raced._closed == 0)
                return raced;
            s_bySegment.AddOrUpdate(segment, queue);
        }
        // Catch-up goes through ProcSignal (PROCSIG_CATCHUP_INTERRUPT), checked against the reader's pid.
        queue._catchupSignal = (procno, pid) => ProcSignal.SendProcSignal(procs, procno, ProcSignalReason.CatchupInterrupt, pid);
        // A slot given back or reclaimed from a dead process stops being a reader.
        procs.AddSlotReleaseHook(queue.ForgetReleasedSlot);
        segment.RegisterOnDetach(queue.OnSegmentDetach);
        return queue;
    }

    private static void Initialize(ShmemRegion region, int maxProcs)
    {
        var seg = (SISegHeader*)region.Pointer;
        seg->WriteLock.Lock.Initialize(BuiltinTranche.SInvalWrite);
        seg->ReadLock.Lock.Initialize(BuiltinTranche.SInvalRead);
        SLock.Init(ref seg->MsgnumLock.Value);
        seg->MinMsgNum = 0;
        seg->MaxMsgNum = 0;
        seg->NextThreshold = CleanupMin;
        seg->LastBackend = 0;
        seg->MaxProcs = maxProcs;
        seg->RingSize = MaxNumMessages;
        var states = (ProcState*)((byte*)seg + sizeof(SISegHeader) + (long)MaxNumMessages * sizeof(SharedInvalidationMessage));
        for (int i = 0; i < maxProcs; i++)
            states[i] = default;
        // Written last; ShmemInitStruct's ready state publishes everything to other processes.
        seg->Magic = SISegHeader.MagicValue;
    }

    private void OnSegmentDetach(bool destroying)
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        lock (s_registryLock)
            s_bySegment.Remove(_segment);
    }

    /// <summary>Number of reader slots (the participant slot array's size).</summary>
    public int MaxProcs { get; }

    /// <summary>
    /// Called by the cleanup, after it has released both locks, with (procno, pid) of the reader it wants to hurry
    /// (PostgreSQL's SendProcSignal(pid, PROCSIG_CATCHUP_INTERRUPT, procno)). The receiving participant should call
    /// <see cref="ReceiveAll"/> soon. Null: nobody is signalled; readers find out through <see cref="CatchupPending"/>.
    /// An exception it throws propagates to the sender, after the queue's locks are back in order.
    /// </summary>
    internal Action<int, int>? CatchupSignal
    {
        get => _catchupSignal;
        set => _catchupSignal = value;
    }

    /// <summary>
    /// Makes <paramref name="me"/> consume its messages whenever it is signalled to catch up: its
    /// ProcessInterrupts() (CHECK_FOR_INTERRUPTS) then runs <see cref="ReceiveAll"/> with these callbacks.
    /// </summary>
    public void HandleCatchupInterrupts(Participant me, SinvalConsumer onMessage, Action onReset)
    {
        ArgumentNullException.ThrowIfNull(me);
        ArgumentNullException.ThrowIfNull(onMessage);
        ArgumentNullException.ThrowIfNull(onReset);
        me.SetProcSignalHandler(ProcSignalReason.CatchupInterrupt, p => ReceiveAll(p, onMessage, onReset));
    }

    // ------------------------------------------------------------------
    // Registration
    // ------------------------------------------------------------------

    /// <summary>
    /// Makes <paramref name="me"/> a reader starting at the newest message (SharedInvalBackendInit). A send-only
    /// participant never receives and never holds back the queue (PostgreSQL's startup process in recovery).
    /// </summary>
    public void RegisterBackend(Participant me, bool sendOnly = false)
    {
        CheckParticipant(me);
        int procno = me.ProcNumber;
        ProcState* s = _states + procno;
        _writeLock->Acquire(me, LWLockMode.Exclusive);
        try
        {
            if (s->Pid != 0 && !IsStale(procno, s))
                throw new InvalidOperationException($"participant {procno} is already registered with the invalidation queue (pid {s->Pid})");
            s->NextMsgNum = _seg->MaxMsgNum;
            s->ResetState = 0;
            // Release stores of the lock-free-read flags (CatchupPending, the fast path); the Pid store below
            // publishes the whole slot.
            Volatile.Write(ref s->Signaled, 0);
            Volatile.Write(ref s->HasMessages, 0);
            s->SendOnly = sendOnly ? 1 : 0;
            s->Generation = Volatile.Read(ref me.Proc->Generation);
            // Last: the slot counts as a reader from here (inserters and the cleanup read it under this lock;
            // GetStatistics reads it without, acquire).
            Volatile.Write(ref s->Pid, me.Proc->Pid);
            if (procno >= _seg->LastBackend)
                _seg->LastBackend = procno + 1;
        }
        finally
        {
            _writeLock->Release(me);
        }
        _local[procno] = new LocalReceiver();
    }

    /// <summary>Stops <paramref name="me"/> being a reader (CleanupInvalidationState). A no-op if it is not one.</summary>
    public void UnregisterBackend(Participant me)
    {
        CheckParticipant(me);
        int procno = me.ProcNumber;
        ProcState* s = _states + procno;
        _writeLock->Acquire(me, LWLockMode.Exclusive);
        try
        {
            if (s->Pid != 0 && s->Generation == Volatile.Read(ref me.Proc->Generation))
            {
                // Release; pairs with the acquire load in GetStatistics (the lock's other users hold WriteLock).
                Volatile.Write(ref s->Pid, 0);
                // Recompute the highest slot in use (Pid loads under WriteLock; atomic because ForgetSlot writes
                // it without the lock).
                int i;
                for (i = _seg->LastBackend; i > 0; i--)
                    if (Volatile.Read(ref _states[i - 1].Pid) != 0)
                        break;
                _seg->LastBackend = i;
            }
        }
        finally
        {
            _writeLock->Release(me);
        }
        _local[procno] = null;
    }

    /// <summary>
    /// Drops the registration in slot <paramref name="procno"/>, whose participant died without unregistering. The
    /// supervisor calls it when ProcArray reclaims the dead slot, before the slot is handed out again. Takes no lock
    /// (the caller need not be a participant): the registration stops counting at the next cleanup.
    /// </summary>
    internal void ForgetSlot(int procno)
    {
        ThrowIfClosed();
        if ((uint)procno >= (uint)MaxProcs)
            throw new ArgumentOutOfRangeException(nameof(procno), procno, $"there are {MaxProcs} reader slots");
        // Atomic; pairs with the loads of Pid under SInvalWriteLock (insert, cleanup, Register): the owner is dead,
        // nobody else writes the slot until it is registered again, and insert and cleanup are correct whether they
        // see the old pid or 0 (a dead reader gets a flag it never reads, or is reset or signalled in vain).
        Interlocked.Exchange(ref _states[procno].Pid, 0);
        _local[procno] = null;
    }

    /// <summary>
    /// ProcArray's slot-release hook: <see cref="ForgetSlot"/>, except while the segment goes away (the participants
    /// are closed by ProcArray's on-detach callback, which may run after this queue's own): the queue goes with it.
    /// </summary>
    private void ForgetReleasedSlot(int procno)
    {
        if (Volatile.Read(ref _closed) == 0)
            ForgetSlot(procno);
    }

    /// <summary>
    /// A registration whose participant slot has since been given back (Pid 0) or handed to someone else
    /// (generation moved on): its participant left without unregistering.
    /// </summary>
    private bool IsStale(int procno, ProcState* s)
    {
        PgProc* p = _procs.Procs + procno;
        // Acquire loads; pair with the release store of PgProc.Pid in ProcArray.AcquireSlot / ReleaseSlot
        // (Generation is bumped before that store).
        return Volatile.Read(ref p->Pid) == 0 || Volatile.Read(ref p->Generation) != s->Generation;
    }

    // ------------------------------------------------------------------
    // Inspection and test hooks
    // ------------------------------------------------------------------

    /// <summary>Counters and every registered reader, read without locks (a snapshot for inspection).</summary>
    public SinvalStatistics GetStatistics()
    {
        // Every load is an acquire of a word written under the queue's locks (or, for Pid, by ForgetSlot's
        // exchange); they pair with those writers' lock releases / release stores, not with each other.
        ThrowIfClosed();
        SISegHeader* seg = _seg;
        List<SinvalReaderInfo> readers = [];
        int last = Volatile.Read(ref seg->LastBackend);
        for (int i = 0; i < last && i < MaxProcs; i++)
        {
            ProcState* s = _states + i;
            // Acquire; pairs with the release store of Pid in RegisterBackend.
            int pid = Volatile.Read(ref s->Pid);
            if (pid == 0)
                continue;
            readers.Add(new SinvalReaderInfo(i, pid, Volatile.Read(ref s->NextMsgNum), Volatile.Read(ref s->ResetState) != 0,
                Volatile.Read(ref s->Signaled) != 0, Volatile.Read(ref s->HasMessages) != 0, Volatile.Read(ref s->SendOnly) != 0));
        }
        return new SinvalStatistics(Volatile.Read(ref seg->MinMsgNum), Volatile.Read(ref seg->MaxMsgNum),
            Volatile.Read(ref seg->NextThreshold), last, Volatile.Read(ref seg->ResetsIssued), Volatile.Read(ref seg->SignalsSent), readers);
    }

    /// <summary>
    /// Tests only: moves every counter (minMsgNum, maxMsgNum, each reader's nextMsgNum) by the same multiple of the
    /// ring size, so maxMsgNum lands at or just below <paramref name="target"/> and live messages keep their ring slots.
    /// </summary>
    internal void ShiftMessageNumbersForTesting(Participant me, int target)
    {
        CheckParticipant(me);
        _writeLock->Acquire(me, LWLockMode.Exclusive);
        _readLock->Acquire(me, LWLockMode.Exclusive);
        try
        {
            SISegHeader* seg = _seg;
            int shift = target - seg->MaxMsgNum;
            shift -= ((shift % MaxNumMessages) + MaxNumMessages) % MaxNumMessages;
            seg->MinMsgNum += shift;
            seg->MaxMsgNum += shift;
            for (int i = 0; i < seg->LastBackend; i++)
                if (_states[i].Pid != 0)
                    _states[i].NextMsgNum += shift;
        }
        finally
        {
            _readLock->Release(me);
            _writeLock->Release(me);
        }
    }

    // ------------------------------------------------------------------
    // Checks
    // ------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckParticipant(Participant me)
    {
        if (me is null || me.Array != _procs || _closed != 0)
            ThrowBadParticipant(me);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadParticipant(Participant? me)
    {
        ArgumentNullException.ThrowIfNull(me);
        ThrowIfClosed();
        throw new ArgumentException($"{me} belongs to another cluster's participant slots", nameof(me));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static LocalReceiver ThrowNotRegistered(int procno)
        => throw new InvalidOperationException($"participant {procno} is not registered with the invalidation queue (call RegisterBackend first)");

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) != 0)
            throw new ObjectDisposedException(nameof(SinvalQueue), $"the invalidation queue of segment {_segment.Handle.Id} is no longer attached in this process");
    }
}
