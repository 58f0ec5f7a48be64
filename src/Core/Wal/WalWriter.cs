/*-------------------------------------------------------------------------
 * WalWriter.cs
 *   The WAL writer's main loop: an auxiliary participant that wakes every
 *   wal_writer_delay and flushes the WAL that committers left unflushed
 *   (asynchronous work, records inserted without XLogFlush), so that it
 *   reaches disk within a bounded time and the WAL buffers do not fill
 *   with unwritten pages that inserters would have to write themselves.
 *
 * NOTES
 *   PostgreSQL's XLogBackgroundFlush writes only whole pages unless
 *   wal_writer_delay has passed since its last flush or
 *   wal_writer_flush_after bytes are pending. Here each round is one
 *   wal_writer_delay, so every round flushes all that is pending; in
 *   addition the writer takes a round at once, without sleeping, while at
 *   least wal_writer_flush_after bytes were pending at its last flush (a
 *   burst of inserts). Like the checkpointer, it is hosted by a child the
 *   user starts (ChildSpec), which calls Run until its stop token fires;
 *   the supervisor's death ends it (SupervisorDiedException).
 *
 *   Mirrors src/backend/postmaster/walwriter.c (WalWriterMain).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Wal;

/// <summary>The WAL writer (walwriter.c): flushes pending WAL every wal_writer_delay.</summary>
public static class WalWriter
{
    /// <summary>The WAL writer idle in its main loop (Activity).</summary>
    public static readonly WaitEventId WaitEventWalWriterMain = new(WaitEventClass.Activity, 9);

    /// <summary>Names this module's wait events when Core is loaded (see WaitEventRegistry.cs).</summary>
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "fills the wait-event name table only: no I/O, no other module touched (WaitEventRegistry.cs)")]
    internal static void RegisterWaitEvents() => WaitEventRegistry.RegisterBuiltin(WaitEventWalWriterMain, "WalWriterMain");

    /// <summary>
    /// The WAL writer's main loop on <paramref name="me"/>'s thread until <paramref name="stop"/> fires: every
    /// <see cref="WalOptions.WriterDelayMs"/> it flushes what is inserted and not yet durable. Returns the number of
    /// rounds that wrote; throws <see cref="SupervisorDiedException"/> when the supervisor dies.
    /// </summary>
    public static long Run(XLog wal, Participant me, CancellationToken stop)
    {
        ArgumentNullException.ThrowIfNull(wal);
        ArgumentNullException.ThrowIfNull(me);
        using CancellationTokenRegistration reg = stop.Register(static p => ((Participant)p!).SetLatch(), me);
        long rounds = 0;
        while (!stop.IsCancellationRequested)
        {
            me.ResetLatch();
            me.ProcessInterrupts();
            ulong before = wal.FlushLsn;
            if (wal.BackgroundFlush(me))
                rounds++;
            bool burst = wal.FlushLsn - before >= (ulong)Math.Max(1, wal.Options.WriterFlushAfterBytes);
            if (burst)
                continue;
            WaitEvents got = me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout | WaitEvents.SupervisorDeath, wal.Options.WriterDelayMs,
                WaitEventWalWriterMain);
            if ((got & WaitEvents.SupervisorDeath) != 0)
                throw new SupervisorDiedException();
        }
        wal.BackgroundFlush(me);
        return rounds;
    }
}
