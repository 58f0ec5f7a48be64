/*-------------------------------------------------------------------------
 * CancellationTests.cs
 *   The CancellationToken overloads of the waits a server makes: a
 *   cancelled WaitLatch, shm_mq Receive and Send, WaitForStopped,
 *   background-worker waits and checkpoint request end with
 *   OperationCanceledException; Timeout.InfiniteTimeSpan is a timeout.
 *
 * NOTES
 *   Each wait would otherwise last forever (an infinite timeout, a silent
 *   peer): without the cancel the test's thread is not joined in time and
 *   the test fails. The cancel comes from another thread while the waiter
 *   is asleep (its slot shows the wait event), not before the call.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Latch;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Tests.Buffers;
using PgIpc.Tests.Mq;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Diagnostics;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class CancellationTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private static readonly WaitEventId Waiting = new(WaitEventClass.Extension, 0x7E57);

    /// <summary>Cancels <paramref name="cts"/> once participant <paramref name="procNumber"/> shows <paramref name="waitEvent"/>.</summary>
    private static Thread CancelWhenWaiting(ProcArray procs, Func<int> procNumber, WaitEventId waitEvent, CancellationTokenSource cts)
    {
        var t = new Thread(() =>
        {
            Poll.Until(() => procNumber() >= 0 && procs.GetProcs().Any(p => p.ProcNumber == procNumber() && p.WaitEvent == waitEvent));
            cts.Cancel();
        }) { IsBackground = true };
        t.Start();
        return t;
    }

    [Test]
    public void ACancelledWaitLatchThrowsOperationCanceled()
    {
        using LockCluster c = LockCluster.Create(_platform);
        using var cts = new CancellationTokenSource();
        int procno = -1;
        Thread canceller = CancelWhenWaiting(c.Procs, () => Volatile.Read(ref procno), Waiting, cts);
        Exception? error = null;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            me.ResetLatch();
            Volatile.Write(ref procno, me.ProcNumber);
            error = Assert.Catch<OperationCanceledException>(() => me.WaitLatch(WaitEvents.LatchSet, Timeout.InfiniteTimeSpan, Waiting, cts.Token));
        });
        canceller.Join();
        Assert.That(error, Is.Not.Null);
    }

    [Test]
    public void AWaitLatchWithATimeSpanTimesOutAndAnInfiniteOneNeedsNoTimeoutFlag()
    {
        using LockCluster c = LockCluster.Create(_platform);
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            me.ResetLatch();
            Assert.That(me.WaitLatch(WaitEvents.LatchSet, TimeSpan.FromMilliseconds(1)), Is.EqualTo(WaitEvents.Timeout));
            me.SetLatch();
            Assert.That(me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, Timeout.InfiniteTimeSpan), Is.EqualTo(WaitEvents.LatchSet));
            Assert.Catch<ArgumentException>(() => Latches.WaitLatch(me, WaitEvents.Timeout, 10, default, new CancellationTokenSource().Token));
        });
    }

    [Test]
    public void ACancelledShmMqReceiveThrowsAndKeepsTheQueueUsable()
    {
        using MqCluster c = MqCluster.Create(_platform);
        c.CreateQueues(1, 4096);
        using var cts = new CancellationTokenSource();
        int procno = -1;
        Thread canceller = CancelWhenWaiting(c.Procs, () => Volatile.Read(ref procno), ShmMqHandle.ReceiveWaitEvent, cts);
        Exception? error = null;
        int afterwards = -1;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, 4096);
            mq.SetSender(me);
            mq.SetReceiver(me);
            using ShmMqHandle tx = mq.AttachAsSender(me);
            using ShmMqHandle rx = mq.AttachAsReceiver(me);
            rx.SpinBeforeSleep = false;
            me.ResetLatch();
            Volatile.Write(ref procno, me.ProcNumber);
            error = Assert.Catch<OperationCanceledException>(() => rx.Receive(out ReadOnlySpan<byte> _, cts.Token));
            Assert.That(tx.Send(new byte[7], CancellationToken.None), Is.EqualTo(ShmMqResult.Success));
            Assert.That(rx.Receive(out ReadOnlySpan<byte> m, new CancellationTokenSource().Token), Is.EqualTo(ShmMqResult.Success));
            afterwards = m.Length;
        });
        canceller.Join();
        Assert.That(error, Is.Not.Null);
        Assert.That(afterwards, Is.EqualTo(7), "a message sent after the cancel is received");
    }

    [Test]
    public void ACancelledShmMqSendOnAFullQueueThrowsOperationCanceled()
    {
        using MqCluster c = MqCluster.Create(_platform);
        c.CreateQueues(1, 4096);
        using var cts = new CancellationTokenSource();
        int procno = -1;
        Thread canceller = CancelWhenWaiting(c.Procs, () => Volatile.Read(ref procno), ShmMqHandle.SendWaitEvent, cts);
        Exception? error = null;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, 4096);
            mq.SetSender(me);
            mq.SetReceiver(me);
            using ShmMqHandle tx = mq.AttachAsSender(me);
            using ShmMqHandle rx = mq.AttachAsReceiver(me); // attached, never reads
            tx.SpinBeforeSleep = false;
            me.ResetLatch();
            Volatile.Write(ref procno, me.ProcNumber);
            error = Assert.Catch<OperationCanceledException>(() => tx.Send(new byte[8192], cts.Token));
        });
        canceller.Join();
        Assert.That(error, Is.Not.Null);
    }

    [Test]
    public void ACancelledWaitForStoppedThrowsAndAnInfiniteOneReturnsOnceStopped()
    {
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("cancel-stop")).WithPlatform(_platform).WithLog(TextWriter.Null).Build();
        try
        {
            s.Start();
            using var cts = new CancellationTokenSource();
            cts.CancelAfter(50);
            Assert.Catch<OperationCanceledException>(() => s.WaitForStopped(Timeout.InfiniteTimeSpan, cts.Token));
            Assert.That(s.State, Is.EqualTo(ClusterState.Running));
            var stopper = new Thread(() => s.Shutdown(ShutdownMode.Fast, Timeout.InfiniteTimeSpan)) { IsBackground = true };
            stopper.Start();
            Assert.That(s.WaitForStopped(Timeout.InfiniteTimeSpan, new CancellationTokenSource().Token), Is.True);
            stopper.Join();
        }
        finally
        {
            s.Dispose();
        }
    }

    [Test]
    public void ACancelledBackgroundWorkerStartupWaitThrows()
    {
        // Registered but never started (the supervisor is not running): the wait would last forever.
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("cancel-bgw")).WithPlatform(_platform).WithLog(TextWriter.Null).Build();
        try
        {
            BackgroundWorkerHandle h = s.StartChild(ChildSpec.ForThisProgram("never", TestWorker.Verb, ["--help"]));
            using var cts = new CancellationTokenSource();
            cts.CancelAfter(50);
            Assert.Catch<OperationCanceledException>(() => h.WaitForStartup(Timeout.InfiniteTimeSpan, cts.Token));
            using var cts2 = new CancellationTokenSource();
            cts2.CancelAfter(50);
            Assert.Catch<OperationCanceledException>(() => h.WaitForShutdown(Timeout.InfiniteTimeSpan, cts2.Token));
        }
        finally
        {
            s.Dispose();
        }
    }

    [Test]
    public void ACancelledCheckpointRequestWithoutACheckpointerThrows()
    {
        using BufferCluster c = BufferCluster.Create(_platform, numBuffers: 16);
        using var cts = new CancellationTokenSource();
        int procno = -1;
        Thread canceller = CancelWhenWaiting(c.Procs, () => Volatile.Read(ref procno), Checkpointer.WaitEventCheckpointStart, cts);
        Exception? error = null;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            Volatile.Write(ref procno, me.ProcNumber);
            error = Assert.Catch<OperationCanceledException>(() => c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Wait, cts.Token));
        });
        canceller.Join();
        Assert.That(error, Is.Not.Null, "cancelled before the 2 s wait for a checkpointer gave up");
    }
}
