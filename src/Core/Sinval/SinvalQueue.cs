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
 *   Insert (SIInsertDataEntries). Messages go in chunks of WriteQuantum
 *   under SInvalWriteLock, so one large batch cannot hold the lock for long.
 *   Before a chunk, if the ring lacks room for it or holds at least
 *   nextThreshold messages, the cleanup runs (with minFree = the chunk).
 *   The chunk is copied into the ring, then maxMsgNum is advanced under
 *   msgnumLock (publishing the payload), then every reader's hasMessages is
 *   set.
 *
 *   Read (SIGetDataEntries). A reader first looks at its own hasMessages
 *   without any lock: false means nothing new (a message sent concurrently
 *   is as good as one sent just after the call). Otherwise it takes
 *   SInvalReadLock shared, clears hasMessages, then reads maxMsgNum under
 *   msgnumLock. The order matters: an inserter stores maxMsgNum and then
 *   sets hasMessages, and the reader clears hasMessages and then (after a
 *   full barrier) loads maxMsgNum, so either the reader sees the new
 *   maxMsgNum or the flag stays set for its next call; nothing is lost. A
 *   reset reader is moved to maxMsgNum and gets -1. Otherwise it copies up
 *   to the buffer's length; if that did not reach maxMsgNum it sets
 *   hasMessages again, else it clears its signaled flag.
 *
 *   Cleanup (SICleanupQueue), with both locks exclusive. The new minMsgNum
 *   is the smallest nextMsgNum of the active, not reset, not send-only
 *   readers. A reader more than MaxNumMessages - minFree behind is reset
 *   instead of counted, which is what makes room. nextThreshold becomes
 *   CleanupMin, or the live count rounded up to the next CleanupQuantum, so
 *   cleanups stay rare while readers keep up. The furthest-behind reader
 *   that is more than SigThreshold behind and not yet signaled is marked
 *   signaled and, after both locks are released (the signal is slow and
 *   needs no lock), sent the catch-up signal (CatchupSignal; the
 *   supervisor wires it to ProcSignal's catch-up interrupt). When that
 *   reader has caught up (ReceiveAll), it runs the cleanup once more, which
 *   signals the next slowest: the signal is passed along reader to reader
 *   ("daisy chain") instead of waking everybody at once.
 *
 *   Wraparound. When minMsgNum reaches MsgNumWraparound, the cleanup
 *   subtracts it from minMsgNum, maxMsgNum and every active reader's
 *   nextMsgNum. It is a multiple of the ring size, so ring positions do not
 *   move; readers are excluded (ReadLock exclusive) while it happens.
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
 *   Hot paths (SendMessages, GetMessages, ReceiveAll) allocate nothing: the
 *   receive batch lives in a per-slot process-local buffer made at
 *   RegisterBackend.
 *
 *   Mirrors src/backend/storage/ipc/sinvaladt.c (SInvalShmemSize,
 *   SharedInvalShmemInit, SharedInvalBackendInit, CleanupInvalidationState,
 *   SIInsertDataEntries, SIGetDataEntries, SICleanupQueue) and sinval.c
 *   (ReceiveSharedInvalidMessages).
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
public sealed unsafe class SinvalQueue
{
    /// <summary>Name of the structure in the ShmemIndex.</summary>
    public const string ShmemName = "PgIpc.SInvalSeg";

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
    public static long ShmemSize(int maxProcs)
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
    public static SinvalQueue Init(ShmemSegment segment, ProcArray procs, out bool found)
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
    public Action<int, int>? CatchupSignal
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
    public void ForgetSlot(int procno)
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
    // Sending
    // ------------------------------------------------------------------

    /// <summary>
    /// Broadcasts <paramref name="messages"/> to every other reader, in order. Convenience: as the calling thread's
    /// <see cref="Participant.Current"/>; <see cref="SendMessages(Participant, ReadOnlySpan{SharedInvalidationMessage})"/> is the primary API.
    /// </summary>
    public void SendMessages(ReadOnlySpan<SharedInvalidationMessage> messages) => SendMessages(Participant.Current, messages);

    /// <summary>
    /// Broadcasts <paramref name="messages"/> to every reader (SIInsertDataEntries): in chunks of
    /// <see cref="SinvalConstants.WriteQuantum"/> under SInvalWriteLock, cleaning the queue when it is past its
    /// threshold. Never waits for readers; a reader left too far behind is reset.
    /// </summary>
    public void SendMessages(Participant me, ReadOnlySpan<SharedInvalidationMessage> messages)
    {
        CheckParticipant(me);
        SISegHeader* seg = _seg;
        while (!messages.IsEmpty)
        {
            int n = Math.Min(messages.Length, WriteQuantum);
            ReadOnlySpan<SharedInvalidationMessage> chunk = messages[..n];
            messages = messages[n..];

            _writeLock->Acquire(me, LWLockMode.Exclusive);
            try
            {
                // Make room, and keep the ring from growing past nextThreshold without a look at the readers.
                for (;;)
                {
                    int numMsgs = seg->MaxMsgNum - seg->MinMsgNum;
                    if (numMsgs + n > MaxNumMessages || numMsgs >= seg->NextThreshold)
                        CleanupQueue(me, callerHasWriteLock: true, minFree: n);
                    else
                        break;
                }

                int max = seg->MaxMsgNum;
                int first = max & (MaxNumMessages - 1);
                int firstPart = Math.Min(n, MaxNumMessages - first);
                chunk[..firstPart].CopyTo(new Span<SharedInvalidationMessage>(_ring + first, firstPart));
                if (firstPart < n)
                    chunk[firstPart..].CopyTo(new Span<SharedInvalidationMessage>(_ring, n - firstPart));

                // Publish: the payload above is written before MaxMsgNum moves. The spinlock's release pairs with
                // the reader's acquire of it in GetMessagesCore.
                SLock.Acquire(ref seg->MsgnumLock.Value, "msgnumLock");
                seg->MaxMsgNum = max + n;
                SLock.Release(ref seg->MsgnumLock.Value);

                // Then tell every reader. Release stores after the MaxMsgNum store: a reader that sees the flag and
                // clears it will load the new MaxMsgNum (pairs with the reader's clear + full barrier + load).
                int last = seg->LastBackend;
                ProcState* states = _states;
                for (int i = 0; i < last; i++)
                {
                    ProcState* s = states + i;
                    if (s->Pid != 0 && s->SendOnly == 0)
                        Volatile.Write(ref s->HasMessages, 1);
                }
            }
            finally
            {
                _writeLock->Release(me);
            }
        }
    }

    // ------------------------------------------------------------------
    // Receiving
    // ------------------------------------------------------------------

    /// <summary>
    /// Copies the next messages for <paramref name="me"/> into <paramref name="buffer"/> (SIGetDataEntries).
    /// Returns how many (0: nothing new), or -1 when <paramref name="me"/> fell off the ring and was reset: it has
    /// missed messages and must rebuild whatever it caches; it now stands at the newest message.
    /// Does not pass a catch-up signal on; <see cref="ReceiveAll"/> does (at its next call if GetMessages caught up).
    /// </summary>
    public int GetMessages(Participant me, Span<SharedInvalidationMessage> buffer)
    {
        CheckParticipant(me);
        if (buffer.IsEmpty)
            throw new ArgumentException("the receive buffer must hold at least one message", nameof(buffer));
        return GetMessagesCore(me, buffer);
    }

    private int GetMessagesCore(Participant me, Span<SharedInvalidationMessage> buffer)
    {
        int procno = me.ProcNumber;
        ProcState* s = _states + procno;
        if (s->Pid == 0 || s->Generation != me.Proc->Generation)
            ThrowNotRegistered(procno);

        // Fast path without locks (acquire; pairs with the inserter's release store of 1). A message being sent
        // right now may be missed; the caller could not have depended on it anyway.
        if (Volatile.Read(ref s->HasMessages) == 0)
            return 0;

        SISegHeader* seg = _seg;
        _readLock->Acquire(me, LWLockMode.Shared);
        // Clear the flag before looking at MaxMsgNum: the spinlock acquire below is a full barrier, so this store is
        // visible before the load. An inserter that moves MaxMsgNum after our load sets the flag again after our
        // clear, and we come back next time.
        Volatile.Write(ref s->HasMessages, 0);
        SLock.Acquire(ref seg->MsgnumLock.Value, "msgnumLock");
        int max = seg->MaxMsgNum;
        SLock.Release(ref seg->MsgnumLock.Value);

        if (s->ResetState != 0)
        {
            // Fell off the ring: resume at the newest message; a pending catch-up is moot.
            s->NextMsgNum = max;
            s->ResetState = 0;
            NoteCatchup(procno, s);
            _readLock->Release(me);
            return -1;
        }

        int next = s->NextMsgNum;
        int n = Math.Min(buffer.Length, max - next);
        int first = next & (MaxNumMessages - 1);
        int firstPart = Math.Min(n, MaxNumMessages - first);
        new ReadOnlySpan<SharedInvalidationMessage>(_ring + first, firstPart).CopyTo(buffer);
        if (firstPart < n)
            new ReadOnlySpan<SharedInvalidationMessage>(_ring, n - firstPart).CopyTo(buffer[firstPart..]);
        next += n;
        s->NextMsgNum = next;

        if (next >= max)
            NoteCatchup(procno, s);                 // caught up: the catch-up request (if any) is answered
        else
            Volatile.Write(ref s->HasMessages, 1);  // more to read: come back without waiting for a sender
        _readLock->Release(me);
        return n;
    }

    /// <summary>Clears the signaled flag (under ReadLock shared, by the owner) and remembers it was set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteCatchup(int procno, ProcState* s)
    {
        if (s->Signaled == 0)
            return;
        // Release; pairs with the acquire load in CatchupPending (the cleanup, its other writer, is excluded by
        // the ReadLock we hold shared).
        Volatile.Write(ref s->Signaled, 0);
        LocalReceiver? r = _local[procno];
        if (r is not null)
            r.CatchupSeen = true;
    }

    /// <summary>
    /// Consumes every message waiting for <paramref name="me"/> (ReceiveSharedInvalidMessages): calls
    /// <paramref name="onMessage"/> for each, in order; if <paramref name="me"/> was reset calls
    /// <paramref name="onReset"/> ("you missed messages: rebuild everything") and goes on with the messages sent
    /// since. Once caught up, if it had been asked to catch up, runs the cleanup so the request passes to the next
    /// slowest reader. <paramref name="onMessage"/> may call ReceiveAll again; if it throws, the messages already
    /// fetched but not yet delivered are delivered by the next call.
    /// </summary>
    public void ReceiveAll(Participant me, SinvalConsumer onMessage, Action onReset)
    {
        CheckParticipant(me);
        ArgumentNullException.ThrowIfNull(onMessage);
        ArgumentNullException.ThrowIfNull(onReset);
        LocalReceiver r = _local[me.ProcNumber] ?? ThrowNotRegistered(me.ProcNumber);

        // Messages fetched by an outer call (recursion) or by a call that threw, not yet delivered.
        while (r.Next < r.Count)
        {
            SharedInvalidationMessage m = r.Buffer[r.Next++];
            onMessage(in m);
        }

        for (;;)
        {
            r.Next = r.Count = 0;
            int got = GetMessagesCore(me, r.Buffer);
            if (got < 0)
            {
                onReset();
                continue; // the messages sent since the reset point
            }
            r.Count = got;
            while (r.Next < r.Count)
            {
                // A copy: a recursive call refills the buffer.
                SharedInvalidationMessage m = r.Buffer[r.Next++];
                onMessage(in m);
            }
            // Count may have been changed by a recursive call; a full batch means there may be more.
            if (r.Count < r.Buffer.Length)
                break;
        }

        if (r.CatchupSeen)
        {
            r.CatchupSeen = false;
            CleanupQueue(me, callerHasWriteLock: false, minFree: 0);
        }
    }

    /// <summary>True when the cleanup has asked <paramref name="me"/> to catch up and it has not yet (its signaled flag).</summary>
    public bool CatchupPending(Participant me)
    {
        CheckParticipant(me);
        // Acquire; pairs with the cleanup's release store of Signaled.
        return Volatile.Read(ref _states[me.ProcNumber].Signaled) != 0;
    }

    // ------------------------------------------------------------------
    // Cleanup
    // ------------------------------------------------------------------

    /// <summary>
    /// SICleanupQueue: recomputes minMsgNum, resets readers more than MaxNumMessages - <paramref name="minFree"/>
    /// behind, reduces the counters at wraparound, sets nextThreshold and signals the slowest reader past
    /// SigThreshold. With <paramref name="callerHasWriteLock"/> the caller holds SInvalWriteLock and holds it again
    /// on return (it is released while the signal is sent).
    /// </summary>
    internal void CleanupQueue(Participant me, bool callerHasWriteLock, int minFree)
    {
        SISegHeader* seg = _seg;
        if (!callerHasWriteLock)
            _writeLock->Acquire(me, LWLockMode.Exclusive);
        _readLock->Acquire(me, LWLockMode.Exclusive);

        int min = seg->MaxMsgNum;
        int minsig = min - SigThreshold;
        int lowbound = min - MaxNumMessages + minFree;
        int needSig = -1;
        int last = seg->LastBackend;
        for (int i = 0; i < last; i++)
        {
            ProcState* s = _states + i;
            if (s->Pid == 0 || s->ResetState != 0 || s->SendOnly != 0)
                continue;
            if (IsStale(i, s))
            {
                // Its participant left without unregistering: it no longer holds the queue back. Release; pairs
                // with the acquire load in GetStatistics.
                Volatile.Write(ref s->Pid, 0);
                continue;
            }
            int n = s->NextMsgNum;
            if (n < lowbound)
            {
                // Fell off the ring: it will be told at its next read.
                s->ResetState = 1;
                seg->ResetsIssued++;
                continue;
            }
            if (n < min)
                min = n;
            // The furthest-behind reader past the signal threshold that has not been signalled yet.
            if (n < minsig && s->Signaled == 0)
            {
                minsig = n;
                needSig = i;
            }
        }
        seg->MinMsgNum = min;

        if (min >= MsgNumWraparound)
        {
            // Readers are excluded (ReadLock exclusive) and inserters too (WriteLock): no spinlock needed.
            seg->MinMsgNum -= MsgNumWraparound;
            seg->MaxMsgNum -= MsgNumWraparound;
            for (int i = 0; i < last; i++)
                if (_states[i].Pid != 0)
                    _states[i].NextMsgNum -= MsgNumWraparound;
        }

        int numMsgs = seg->MaxMsgNum - seg->MinMsgNum;
        seg->NextThreshold = numMsgs < CleanupMin ? CleanupMin : (numMsgs / CleanupQuantum + 1) * CleanupQuantum;

        if (needSig < 0)
        {
            _readLock->Release(me);
            if (!callerHasWriteLock)
                _writeLock->Release(me);
            return;
        }

        ProcState* target = _states + needSig;
        int pid = target->Pid;
        // Release; pairs with the acquire load in CatchupPending.
        Volatile.Write(ref target->Signaled, 1);
        seg->SignalsSent++;
        // Signalling is slow and needs neither lock.
        _readLock->Release(me);
        _writeLock->Release(me);
        try
        {
            _catchupSignal?.Invoke(needSig, pid);
        }
        finally
        {
            if (callerHasWriteLock)
                _writeLock->Acquire(me, LWLockMode.Exclusive);
        }
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
