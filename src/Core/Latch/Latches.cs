/*-------------------------------------------------------------------------
 * Latches.cs
 *   Latches: SetLatch, ResetLatch and WaitLatch over the participant slots
 *   of a cluster. Sleeping on several things at once is WaitEventSet.cs.
 *
 * NOTES
 *   A latch is two words in its owner's PGPROC (PgLatch): IsSet, and
 *   MaybeSleeping, which the owner raises while it may be blocked in the
 *   kernel. Anyone may set it; only the owner waits on and resets it. The
 *   protocol, as latch.c / waiteventset.c have it:
 *
 *     SetLatch:   fence; if IsSet, return (no system call: the common case
 *                 of a latch already set); IsSet = 1; fence; if MaybeSleeping
 *                 is 0, return; otherwise wake the owner's kernel object.
 *     ResetLatch: IsSet = 0; fence.
 *     Wait:       MaybeSleeping = 1; fence; if IsSet, return at once; else
 *                 block in the kernel; MaybeSleeping = 0.
 *
 *   The two fences make a Dekker pair: either the waiter sees IsSet = 1
 *   after raising MaybeSleeping, or the setter sees MaybeSleeping = 1 after
 *   raising IsSet (and wakes the kernel object, whose readiness persists
 *   until the waiter drains it). A wake-up can therefore be early or
 *   redundant but never lost. The caller's loop is the usual one:
 *       for (;;) { ResetLatch(); if (work to do) { do it; continue; } WaitLatch(...); }
 *
 *   Ordering pairs: SetLatch's fence after IsSet = 1 <-> Wait's fence after
 *   MaybeSleeping = 1 (the Dekker pair above); the setter's writes before
 *   SetLatch <-> the owner's reads after ResetLatch's fence.
 *
 *   Mirrors src/backend/storage/ipc/latch.c.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.CompilerServices;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Latch;

/// <summary>SetLatch, ResetLatch and WaitLatch (latch.c) over the participant slots of a cluster.</summary>
public static unsafe partial class Latches
{
    /// <summary>
    /// Sets participant <paramref name="procNumber"/>'s latch, in this or another process (SetLatch). Never throws:
    /// a bad slot number or a slot without an owner is ignored. On an already-set latch it makes no system call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetLatch(ProcArray procs, int procNumber)
    {
        if (procs is null || (uint)procNumber >= (uint)procs.MaxProcs)
            return;
        PgLatch* latch = &procs.Procs[procNumber].Latch;
        // Pairs with the setter-side expectations: writes made before SetLatch are visible to the owner once it
        // sees IsSet (ResetLatch's fence on its side).
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref latch->IsSet) != 0)
            return;
        SetLatchSlow(procs, procNumber, latch);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void SetLatchSlow(ProcArray procs, int procNumber, PgLatch* latch)
    {
        Volatile.Write(ref latch->IsSet, 1);
        // Dekker pair with WaitEventSet.Wait's fence after MaybeSleeping = 1.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref latch->MaybeSleeping) == 0)
            return;
        procs.WakeLatchOwner(procNumber);
    }

    /// <summary>Clears the calling participant's latch (ResetLatch). Check for work after this, before waiting.</summary>
    public static void ResetLatch(Participant me)
    {
        ArgumentNullException.ThrowIfNull(me);
        Volatile.Write(ref me.Proc->Latch.IsSet, 0);
        // Full fence: reads of shared state after ResetLatch cannot move before the reset (pairs with SetLatch's fence).
        Interlocked.MemoryBarrier();
    }

    /// <summary>True when the participant's latch is set right now.</summary>
    public static bool IsSet(Participant me) => Volatile.Read(ref me.Proc->Latch.IsSet) != 0;

    /// <summary>
    /// Waits on the calling participant's own latch (WaitLatch). <paramref name="events"/> may combine LatchSet,
    /// Timeout and SupervisorDeath or ExitOnSupervisorDeath (the process then exits in order when the supervisor dies,
    /// with <see cref="ParticipantExitCodes.SupervisorDied"/>). Returns what happened (Timeout when the time ran out).
    /// A cancel or terminate request (<see cref="ProcArray.CancelParticipant"/>) is acted on before the sleep and
    /// after it: <see cref="ParticipantCanceledException"/>, or the orderly exit.
    /// </summary>
    public static WaitEvents WaitLatch(Participant me, WaitEvents events, int timeoutMs, WaitEventId waitEvent = default)
    {
        ArgumentNullException.ThrowIfNull(me);
        ValidateLatchEvents(events, timeoutMs);
        me.CheckForCancelOrDie();
        WaitEvents got = WaitLatchCore(me, events, timeoutMs, waitEvent);
        me.CheckForCancelOrDie();
        return got;
    }

    /// <summary>
    /// WaitLatch without the cancel / terminate check, for the library's waits that must not end in an error (a
    /// registration to undo first, as LockBufferForCleanup's pin-count wait). ExitOnSupervisorDeath still exits.
    /// </summary>
    internal static WaitEvents WaitLatchHoldingInterrupts(Participant me, WaitEvents events, int timeoutMs, WaitEventId waitEvent = default)
    {
        ArgumentNullException.ThrowIfNull(me);
        ValidateLatchEvents(events, timeoutMs);
        return WaitLatchCore(me, events, timeoutMs, waitEvent);
    }

    private static WaitEvents WaitLatchCore(Participant me, WaitEvents events, int timeoutMs, WaitEventId waitEvent)
    {
        bool exitOnDeath = (events & WaitEvents.ExitOnSupervisorDeath) != 0;
        if (exitOnDeath)
            events = (events & ~WaitEvents.ExitOnSupervisorDeath) | WaitEvents.SupervisorDeath;
        WaitEventSet set = me.LatchWaitSet(events);
        Span<WaitEvent> got = me.LatchEventBuffer;
        if (!waitEvent.IsNone)
            Diagnostics.PgIpcMetrics.RecordLatchWait(waitEvent); // one Enabled check when nobody listens
        int n = set.Wait((events & WaitEvents.Timeout) != 0 ? timeoutMs : -1, got, waitEvent);
        if (n == 0)
            return WaitEvents.Timeout;
        WaitEvents result = WaitEvents.None;
        for (int i = 0; i < n; i++)
            result |= got[i].Events;
        if (exitOnDeath && (result & WaitEvents.SupervisorDeath) != 0)
            me.ExitForSupervisorDeath();
        return result;
    }

    /// <summary>
    /// Waits on the latch and a socket together (WaitLatchOrSocket). Returns what happened. ExitOnSupervisorDeath and
    /// cancel / terminate requests are handled as by <see cref="WaitLatch(Participant, WaitEvents, int, WaitEventId)"/>.
    /// </summary>
    public static WaitEvents WaitLatchOrSocket(Participant me, WaitEvents events, nint socket, int timeoutMs, WaitEventId waitEvent = default)
    {
        ArgumentNullException.ThrowIfNull(me);
        const WaitEvents socketEvents = WaitEvents.SocketReadable | WaitEvents.SocketWriteable | WaitEvents.SocketConnected | WaitEvents.SocketClosed;
        ValidateLatchEvents(events & ~socketEvents, timeoutMs);
        me.CheckForCancelOrDie();
        bool exitOnDeath = (events & WaitEvents.ExitOnSupervisorDeath) != 0;
        using var set = new WaitEventSet(me, 3);
        if ((events & WaitEvents.LatchSet) != 0)
            set.AddLatch();
        if ((events & (WaitEvents.SupervisorDeath | WaitEvents.ExitOnSupervisorDeath)) != 0)
            set.AddSupervisorDeath();
        if ((events & socketEvents) != 0)
            set.AddSocket(socket, events & socketEvents);
        Span<WaitEvent> got = new WaitEvent[3];
        int n = set.Wait((events & WaitEvents.Timeout) != 0 ? timeoutMs : -1, got, waitEvent);
        WaitEvents result = WaitEvents.None;
        for (int i = 0; i < n; i++)
            result |= got[i].Events;
        if (exitOnDeath && (result & WaitEvents.SupervisorDeath) != 0)
            me.ExitForSupervisorDeath();
        me.CheckForCancelOrDie();
        return n == 0 ? WaitEvents.Timeout : result;
    }

    private static void ValidateLatchEvents(WaitEvents events, int timeoutMs)
    {
        const WaitEvents death = WaitEvents.SupervisorDeath | WaitEvents.ExitOnSupervisorDeath;
        const WaitEvents allowed = WaitEvents.LatchSet | WaitEvents.Timeout | death;
        if ((events & ~allowed) != 0)
            throw new ArgumentException($"WaitLatch takes LatchSet, Timeout, SupervisorDeath and ExitOnSupervisorDeath, not {events & ~allowed}", nameof(events));
        if ((events & allowed) == 0)
            throw new ArgumentException("WaitLatch needs at least one of LatchSet, Timeout, SupervisorDeath, ExitOnSupervisorDeath", nameof(events));
        if ((events & death) == death)
            throw new ArgumentException("WaitLatch takes SupervisorDeath (reported) or ExitOnSupervisorDeath (exits), not both", nameof(events));
        if ((events & WaitEvents.Timeout) != 0 && timeoutMs < 0)
            throw new ArgumentOutOfRangeException(nameof(timeoutMs), timeoutMs, "a Timeout wait needs a timeout of 0 or more milliseconds");
    }
}
