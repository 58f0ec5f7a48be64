/*-------------------------------------------------------------------------
 * PMSignal.cs
 *   Children telling the supervisor that something needs its attention
 *   (PostgreSQL's PMSignal): a background worker was registered, start a
 *   worker for a launcher, restart a child, an application's service
 *   request. What each asks for is in the supervisor request area
 *   (Postmaster/SupervisorRequests.cs); the flag only wakes the supervisor.
 *
 * NOTES
 *   One flag word per reason in shared memory. A child sets the flag and
 *   interrupts the supervisor's process (the same interrupt as ProcSignal);
 *   the supervisor, woken, tests-and-clears each flag it handles
 *   (CheckPostmasterSignal). A flag set twice before the supervisor looks
 *   is handled once, which is what every reason means ("there is work").
 *   The supervisor's process registers a callback that runs after each
 *   interrupt on a runtime thread; it should only wake the supervisor's own
 *   loop (set a latch or an event), never do the work there.
 *
 *   Layout of "PgIpc.PMSignal": PMSignalState (64-byte header, then one
 *   int per reason). Flags: atomic only (children Exchange 1, the
 *   supervisor Exchange 0: the pair orders the child's writes before the
 *   flag against the supervisor's reads after it).
 *
 *   Mirrors src/backend/storage/ipc/pmsignal.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Signals;

/// <summary>Why a child signals the supervisor.</summary>
public enum PMSignalReason
{
    /// <summary>A dynamic background worker was registered (PMSIGNAL_BACKGROUND_WORKER_CHANGE).</summary>
    BackgroundWorkerChange = 0,
    /// <summary>
    /// Start a worker on request, as the autovacuum launcher asks (PMSIGNAL_START_AUTOVAC_WORKER); what to start is in
    /// the supervisor request area (Postmaster.SupervisorRequests.RequestWorker).
    /// </summary>
    StartWorker = 1,
    /// <summary>A child asks for a child (a sibling, or itself) to be restarted (Postmaster.SupervisorRequests.RequestRestart).</summary>
    RestartChild = 2,
    /// <summary>An application request for the supervisor's service hooks (Postmaster.SupervisorRequests.PostServiceRequest).</summary>
    ServiceRequest = 3,
    /// <summary>Reasons 16..31 are the application's.</summary>
    FirstUserReason = 16,
}

/// <summary>Header of the PMSignal state; the flags follow it. Immutable after initialisation except Flags (atomic only).</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 192)]
internal unsafe struct PMSignalState
{
    public const int NumReasons = 32;
    public const uint MagicValue = 0x504D5347; // "PMSG"
    public uint Magic;
    public int SupervisorPid;
    /// <summary>The supervisor's IProcessServices.GetIdentity (0: cannot tell); immutable, as SupervisorPid.</summary>
    public long SupervisorIdentity;
    private fixed byte _pad[48];
    public fixed int Flags[NumReasons];
}

/// <summary>Flags from children to the supervisor.</summary>
public static unsafe class PMSignal
{
    internal const string ShmemName = "PgIpc.PMSignal";

    internal static long ShmemSize() => sizeof(PMSignalState);

    /// <summary>Finds or creates the flags; the creator's process is the supervisor that receives them.</summary>
    internal static void Init(ShmemSegment segment, ProcArray procs, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(procs);
        int supervisor = procs.SupervisorPid;
        long identity = segment.Platform.Processes.GetIdentity(supervisor);
        segment.InitStruct(ShmemName, ShmemSize(), r =>
        {
            var s = (PMSignalState*)r.Pointer;
            s->SupervisorPid = supervisor;
            s->SupervisorIdentity = identity;
            s->Magic = PMSignalState.MagicValue;
        }, out found);
    }

    private static PMSignalState* State(ProcArray procs)
    {
        if (!procs.Segment.TryFindStruct(ShmemName, out ShmemRegion r))
            throw new PgIpcException($"segment {procs.Segment.Handle.Id} has no PMSignal state ({ShmemName}); call PMSignal.Init when creating it");
        return (PMSignalState*)r.Pointer;
    }

    private static void CheckReason(PMSignalReason reason)
    {
        if ((uint)reason >= PMSignalState.NumReasons)
            throw new ArgumentOutOfRangeException(nameof(reason), reason, $"PMSignal reasons are 0..{PMSignalState.NumReasons - 1}");
    }

    /// <summary>Sets <paramref name="reason"/> and interrupts the supervisor (SendPostmasterSignal). False if the supervisor is gone.</summary>
    public static bool SendPostmasterSignal(ProcArray procs, PMSignalReason reason)
    {
        ArgumentNullException.ThrowIfNull(procs);
        CheckReason(reason);
        PMSignalState* s = State(procs);
        // Full barrier; pairs with the supervisor's Exchange in CheckPostmasterSignal.
        Interlocked.Exchange(ref s->Flags[(int)reason], 1);
        int pid = s->SupervisorPid;
        IProcessServices processes = procs.Segment.Platform.Processes;
        if (pid == processes.CurrentProcessId)
        {
            procs.RunInterruptHooksLocally();
            return true;
        }
        // A dead supervisor's pid may belong to an unrelated process by now: signal only the one that made the segment.
        return procs.Latches.Interrupt(procs.ObjectName, pid, s->SupervisorIdentity, processes);
    }

    /// <summary>The supervisor: true (and cleared) if <paramref name="reason"/> was signalled since the last check (CheckPostmasterSignal).</summary>
    public static bool CheckPostmasterSignal(ProcArray procs, PMSignalReason reason)
    {
        ArgumentNullException.ThrowIfNull(procs);
        CheckReason(reason);
        PMSignalState* s = State(procs);
        if (Volatile.Read(ref s->Flags[(int)reason]) == 0)
            return false;
        return Interlocked.Exchange(ref s->Flags[(int)reason], 0) != 0;
    }

    /// <summary>
    /// The supervisor's process: <paramref name="onSignal"/> runs on a runtime thread after each interrupt this
    /// process receives (coalesced). Keep it to waking the supervisor's loop.
    /// </summary>
    public static void OnSignal(ProcArray procs, Action onSignal)
    {
        ArgumentNullException.ThrowIfNull(procs);
        ArgumentNullException.ThrowIfNull(onSignal);
        procs.AddInterruptHook(onSignal);
    }
}
