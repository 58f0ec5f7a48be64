/*-------------------------------------------------------------------------
 * ProcSignal.cs
 *   Telling another participant why it should look up from its work
 *   (ProcSignal), and making every participant acknowledge a change before
 *   going on (ProcSignalBarrier).
 *
 * NOTES
 *   The reason travels in shared memory, the interrupt only wakes: a sender
 *   sets the reason's bit in the target slot's ProcSignalFlags (atomic Or)
 *   and interrupts the target's process (SIGUSR1 through
 *   PosixSignalRegistration; a per-process event on Windows). The process's
 *   interrupt callback, which runs on a runtime thread and never in signal
 *   context, only sets the latches of its participants that have bits
 *   pending. Each participant then runs the reasons' handlers itself, at a
 *   safe point of its own choosing: Participant.ProcessInterrupts(), our
 *   CHECK_FOR_INTERRUPTS. Several sends of one reason before the target
 *   looks are one delivery (coalesced); a send while its handler runs is
 *   seen by the next ProcessInterrupts (Exchange-then-run), so none is lost.
 *
 *   Barriers: EmitProcSignalBarrier sets the barrier kind's bit in every
 *   slot's BarrierFlags, then increments the global generation, then
 *   signals every slot. A participant absorbing barriers reads the global
 *   generation first, then takes its flags, runs the kinds' handlers, and
 *   publishes the generation it read. Any barrier whose generation is not
 *   above the one read had its flags set before the increment, so taking the
 *   flags after the read finds them. WaitForProcSignalBarrier sleeps on each
 *   slot's condition variable until that slot's generation reaches the
 *   emitted one; absorbers broadcast it. Slots joined after an emit start at
 *   the current generation and are not waited for.
 *
 *   Layout of "PgIpc.ProcSignal":
 *     ProcSignalHeader (64 bytes): BarrierGeneration (atomic only)
 *     ConditionVariable[MaxProcs]: each slot's barrier CV
 *
 *   Ordering pairs: the sender's Or on ProcSignalFlags <-> the receiver's
 *   Exchange; the emitter's Or on BarrierFlags <-> the absorber's Exchange,
 *   both ordered by the Interlocked increment of the generation <-> the
 *   absorber's read of it; the absorber's release store of its generation
 *   <-> the waiter's acquire load.
 *
 *   Mirrors src/backend/storage/ipc/procsignal.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Signals;

/// <summary>Why a participant is signalled; one bit each in PGPROC's ProcSignalFlags.</summary>
public enum ProcSignalReason
{
    /// <summary>Sinval: read your invalidation messages (PROCSIG_CATCHUP_INTERRUPT).</summary>
    CatchupInterrupt = 0,
    /// <summary>LISTEN/NOTIFY-style notification (PROCSIG_NOTIFY_INTERRUPT).</summary>
    Notify = 1,
    /// <summary>A parallel worker sent a message (PROCSIG_PARALLEL_MESSAGE).</summary>
    ParallelMessage = 2,
    /// <summary>A ProcSignalBarrier is waiting for you (PROCSIG_BARRIER).</summary>
    Barrier = 3,
    /// <summary>Log your memory contexts (PROCSIG_LOG_MEMORY_CONTEXT).</summary>
    LogMemoryContext = 4,
    /// <summary>
    /// Cancel what you are waiting for (pg_cancel_backend: QueryCancelPending). Handled by the library, not by a
    /// handler: see <see cref="ProcArray.CancelParticipant"/>.
    /// </summary>
    Cancel = 5,
    /// <summary>
    /// Exit in order (pg_terminate_backend: ProcDiePending). Handled by the library, not by a handler: see
    /// <see cref="ProcArray.TerminateParticipant"/>.
    /// </summary>
    Terminate = 6,
    /// <summary>Reasons 32..63 are the application's.</summary>
    FirstUserReason = 32,
}

/// <summary>Header of the ProcSignal state. BarrierGeneration: atomic only (Interlocked increment by emitters).</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct ProcSignalHeader
{
    public const uint MagicValue = 0x50534947; // "PSIG"
    public ulong BarrierGeneration;
    public int MaxProcs;
    public uint Magic;
}

/// <summary>ProcSignal and ProcSignalBarrier.</summary>
public static unsafe class ProcSignal
{
    internal const string ShmemName = "PgIpc.ProcSignal";

    /// <summary>Bytes <see cref="Init"/> takes.</summary>
    internal static long ShmemSize(int maxProcs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxProcs, 1);
        return Shmem.ShmemSize.Add(sizeof(ProcSignalHeader), Shmem.ShmemSize.Mul(maxProcs, sizeof(ConditionVariable)));
    }

    /// <summary>Finds or creates the ProcSignal state for <paramref name="procs"/>'s slots.</summary>
    internal static void Init(ShmemSegment segment, ProcArray procs, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(procs);
        int max = procs.MaxProcs;
        segment.InitStruct(ShmemName, ShmemSize(max), r =>
        {
            var h = (ProcSignalHeader*)r.Pointer;
            h->MaxProcs = max;
            var cvs = (ConditionVariable*)(h + 1);
            for (int i = 0; i < max; i++)
                cvs[i].Initialize();
            h->Magic = ProcSignalHeader.MagicValue;
        }, out found);
    }

    private static ProcSignalHeader* Header(ProcArray procs, bool required)
    {
        if (!procs.Segment.TryFindStruct(ShmemName, out ShmemRegion r))
        {
            if (required)
                throw new PgIpcException($"segment {procs.Segment.Handle.Id} has no ProcSignal state ({ShmemName}); call ProcSignal.Init when creating it");
            return null;
        }
        return (ProcSignalHeader*)r.Pointer;
    }

    /// <summary>The current barrier generation (0 when the cluster has no ProcSignal state).</summary>
    internal static ulong CurrentBarrierGeneration(ProcArray procs)
    {
        ProcSignalHeader* h = Header(procs, required: false);
        return h == null ? 0 : Volatile.Read(ref h->BarrierGeneration);
    }

    /// <summary>
    /// Sends <paramref name="reason"/> to participant <paramref name="procNumber"/> (SendProcSignal). With
    /// <paramref name="expectedPid"/> other than 0 the slot must still belong to that process. Returns false when
    /// the slot is free, owned by another pid, or its process is gone. Never throws for a valid reason.
    /// </summary>
    public static bool SendProcSignal(ProcArray procs, int procNumber, ProcSignalReason reason, int expectedPid = 0)
    {
        ArgumentNullException.ThrowIfNull(procs);
        if ((uint)reason >= 64)
            throw new ArgumentOutOfRangeException(nameof(reason), reason, "ProcSignal reasons are 0..63");
        if ((uint)procNumber >= (uint)procs.MaxProcs)
            return false;
        PgProc* p = procs.Procs + procNumber;
        int pid = Volatile.Read(ref p->Pid);
        if (pid == 0 || (expectedPid != 0 && pid != expectedPid))
            return false;
        // Full barrier; pairs with the receiver's Exchange in ProcessInterrupts.
        Interlocked.Or(ref p->ProcSignalFlags, 1L << (int)reason);
        return Interrupt(procs, procNumber, pid);
    }

    private static bool Interrupt(ProcArray procs, int procNumber, int pid)
    {
        if (pid == procs.Segment.Platform.Processes.CurrentProcessId)
        {
            // Same process: the latch is enough (no signal needed).
            Latch.Latches.SetLatch(procs, procNumber);
            return true;
        }
        // The slot may name a pid whose owner died (dead holders' slots are kept on purpose) and that the OS has since
        // given to an unrelated process: SIGUSR1's default action would kill it. Signal only the process that joined.
        long expected = Volatile.Read(ref procs.Procs[procNumber].PidIdentity); // after the caller's acquire load of Pid
        return procs.Latches.Interrupt(procs.ObjectName, pid, expected, procs.Segment.Platform.Processes);
    }

    /// <summary>
    /// Asks every participant to absorb barrier <paramref name="kind"/> (0..31) and returns the generation to wait
    /// for with <see cref="WaitForProcSignalBarrier"/> (EmitProcSignalBarrier).
    /// </summary>
    public static ulong EmitProcSignalBarrier(ProcArray procs, int kind)
    {
        ArgumentNullException.ThrowIfNull(procs);
        if ((uint)kind >= 32)
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "barrier kinds are 0..31");
        ProcSignalHeader* h = Header(procs, required: true);
        PgProc* all = procs.Procs;
        for (int i = 0; i < procs.MaxProcs; i++)
            Interlocked.Or(ref all[i].BarrierFlags, 1u << kind);
        // Full barrier: the flags above are visible to anyone who reads the new generation.
        ulong generation = Interlocked.Increment(ref h->BarrierGeneration);
        for (int i = 0; i < procs.MaxProcs; i++)
        {
            int pid = Volatile.Read(ref all[i].Pid);
            if (pid == 0)
                continue;
            Interlocked.Or(ref all[i].ProcSignalFlags, 1L << (int)ProcSignalReason.Barrier);
            Interrupt(procs, i, pid);
        }
        return generation;
    }

    /// <summary>
    /// Waits until every live participant has absorbed barriers up to <paramref name="generation"/>
    /// (WaitForProcSignalBarrier). The caller absorbs its own first. Returns false if <paramref name="timeoutMs"/>
    /// (-1: none) expired first.
    /// </summary>
    public static bool WaitForProcSignalBarrier(Participant me, ulong generation, int timeoutMs = -1)
    {
        ArgumentNullException.ThrowIfNull(me);
        ProcArray procs = me.ProcArray;
        ProcSignalHeader* h = Header(procs, required: true);
        var cvs = (ConditionVariable*)(h + 1);
        me.ProcessInterrupts();
        long deadline = timeoutMs < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMs;
        for (int i = 0; i < procs.MaxProcs; i++)
        {
            PgProc* p = procs.Procs + i;
            while (true)
            {
                int pid = Volatile.Read(ref p->Pid);
                // Acquire load; pairs with the absorber's release store in AbsorbBarriers.
                if (pid == 0 || Volatile.Read(ref p->BarrierGeneration) >= generation)
                    break;
                if (i == me.ProcNumber)
                {
                    me.ProcessInterrupts();
                    continue;
                }
                // Gone, or its pid reused by another process (ProcArray.IsSlotOwnerGone): an unreaped zombie is
                // waited for like a live one until reaped.
                if (procs.IsSlotOwnerGone(p, pid))
                    break; // a dead participant will never absorb; its slot will be reclaimed
                ConditionVariable.PrepareToSleep(me, ref cvs[i]);
                if (Volatile.Read(ref p->BarrierGeneration) >= generation)
                    break;
                long left = deadline - Environment.TickCount64;
                if (left <= 0)
                {
                    ConditionVariable.CancelSleep(me);
                    return false;
                }
                // A bounded sleep, so that a participant that dies without absorbing is noticed.
                ConditionVariable.Sleep(me, ref cvs[i], (int)Math.Min(left, 1000));
            }
            ConditionVariable.CancelSleep(me);
        }
        return true;
    }

    /// <summary>The participant's side: absorb pending barriers (called from ProcessInterrupts).</summary>
    internal static void AbsorbBarriers(Participant me, Action<Participant, uint>?[] handlers)
    {
        ProcArray procs = me.ProcArray;
        ProcSignalHeader* h = Header(procs, required: false);
        PgProc* p = me.Proc;
        if (h == null)
        {
            Interlocked.Exchange(ref p->BarrierFlags, 0);
            return;
        }
        // Read the generation first; every barrier up to it has its flag set already (see the banner).
        ulong generation = Volatile.Read(ref h->BarrierGeneration);
        uint flags = Interlocked.Exchange(ref p->BarrierFlags, 0);
        for (int kind = 0; kind < 32; kind++)
        {
            if ((flags & (1u << kind)) == 0)
                continue;
            try
            {
                handlers[kind]?.Invoke(me, (uint)kind);
            }
            catch
            {
                // Not absorbed: put back this kind and the ones not yet run, and let the error go up.
                Interlocked.Or(ref p->BarrierFlags, flags & ~((1u << kind) - 1));
                Interlocked.Or(ref p->ProcSignalFlags, 1L << (int)ProcSignalReason.Barrier);
                throw;
            }
        }
        // Release store; pairs with WaitForProcSignalBarrier's acquire load.
        if (generation > Volatile.Read(ref p->BarrierGeneration))
            Volatile.Write(ref p->BarrierGeneration, generation);
        var cvs = (ConditionVariable*)(h + 1);
        ConditionVariable.Broadcast(me, ref cvs[me.ProcNumber]);
    }
}
