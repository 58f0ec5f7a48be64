/*-------------------------------------------------------------------------
 * ShmMqHandle.Wait.cs
 *   Waiting for the peer (spin, then sleep on the latch), the peer's
 *   liveness, waking the peer, and Detach.
 *
 * NOTES
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
 *   noticed: before the first sleep, and then at most once a second, the
 *   handle asks the optional IShmMqPeer (for a peer that has not attached
 *   yet, e.g. a background worker that failed to start) and checks the pid
 *   the peer recorded when it attached; a sleep never outlasts the next
 *   check. A dead peer reads as Detached, within about a second of its
 *   death. The check is rate-limited because it is a dozen system calls
 *   (kill(pid, 0), and the /proc start time that tells a reused pid from
 *   the peer): asked before every sleep it made a message's round trip
 *   about 20x slower than PostgreSQL's (perf report, 2026-12-03), whose
 *   shm_mq reads only shared memory before it sleeps.
 *
 *   Detach (either side) sets the Detached flag under the spinlock and sets
 *   the peer's latch; a sender first publishes its pending bytes, and a
 *   receiver that sees Detached re-reads BytesWritten so it still drains
 *   everything sent before the detach.
 *
 *   Mirrors shm_mq_wait_internal, shm_mq_detach and the latch waits of
 *   src/backend/storage/ipc/shm_mq.c; the spinning is PgIpc's own.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Numerics;
using System.Diagnostics.CodeAnalysis;
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
    // Waiting, peers, detach
    // ------------------------------------------------------------------

    /// <summary>The wait event a sender shows in its slot while it sleeps for space (MessageQueueSend).</summary>
    public static readonly WaitEventId SendWaitEvent = new(WaitEventClass.IPC, 4);

    /// <summary>The wait event a receiver shows in its slot while it sleeps for data (MessageQueueReceive). A spin shows none.</summary>
    public static readonly WaitEventId ReceiveWaitEvent = new(WaitEventClass.IPC, 3);

    /// <summary>Names this module's wait events when Core is loaded (see WaitEventRegistry.cs).</summary>
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "fills the wait-event name table only: no I/O, no other module touched (WaitEventRegistry.cs)")]
    internal static void RegisterWaitEvents()
    {
        WaitEventRegistry.RegisterBuiltin(SendWaitEvent, "MessageQueueSend");
        WaitEventRegistry.RegisterBuiltin(ReceiveWaitEvent, "MessageQueueReceive");
    }

    /// <summary>
    /// Waits for the peer to move <paramref name="counter"/> (its own: BytesWritten for a receiver, BytesRead for a
    /// sender) away from <paramref name="seen"/>, or to detach: first a bounded spin when <paramref name="spin"/>,
    /// then one sleep on our latch. The caller re-checks either way (a wake-up may be early or redundant). False when
    /// the peer is gone. The caller has published its own progress and set the peer's latch before calling.
    /// </summary>
    private bool WaitForPeer(long* counter, long seen, WaitEventId waitEvent, ref bool spin)
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

    /// <summary>
    /// Sleeps on our latch until the next liveness check is due (at most PeerCheckIntervalMs); false when the peer is
    /// gone (never throws for that).
    /// </summary>
    private bool Sleep(WaitEventId waitEvent)
    {
        long now = Environment.TickCount64;
        if (now >= _nextPeerCheck)
        {
            if (!PeerAlive())
                return false;
            _nextPeerCheck = now + PeerCheckIntervalMs;
        }
        int timeout = (int)Math.Clamp(_nextPeerCheck - now, 1, PeerCheckIntervalMs);
        WaitEvents got = _me.WaitLatch(_waitEvents, timeout, waitEvent);
        if ((got & WaitEvents.SupervisorDeath) != 0)
            throw new PgIpcException("the supervisor died while this participant waited on a shared memory queue");
        _me.ResetLatch();
        if (_cancellation.IsCancellationRequested)
            ThrowCanceled(); // a Send / Receive given a token (ShmMqHandle.Cancel.cs), whose cancel set our latch
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
        // The queue's memory may be gone already (its cluster shut down, its DSM segment detached): then there is
        // nobody in this process to tell, and touching it would fault. Only forget this side.
        if (!LiveMappings.Contains(_h, sizeof(ShmMqHeader)))
        {
            _detached = true;
            return;
        }
        if (_isSender && _sendPending > 0)
            FlushPending();
        _detached = true;
        int victim = _mq.MarkDetached(_isSender);
        if (victim != PgProc.InvalidProcNumber)
            Latches.SetLatch(_me.ProcArray, victim);
    }

    /// <summary>Detaches from the queue (see Detach).</summary>
    public void Dispose() => Detach();
}
