/*-------------------------------------------------------------------------
 * SinvalCatchupTests.cs
 *   The default catch-up path end to end: the queue signals a lagging
 *   reader with ProcSignal (CatchupInterrupt), its latch wakes, and its
 *   ProcessInterrupts() drains the queue, so a reader that never polls is
 *   kept up to date instead of being reset.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sinval;

namespace PgIpc.Tests.Sinval;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class SinvalCatchupTests(string backend)
{
    [Test]
    public void ALaggingReaderIsCaughtUpThroughProcSignal()
    {
        const int total = 188 * 64;
        using SinvalCluster c = SinvalCluster.Create(PgIpcPlatform.Get(backend));
        var received = new List<uint>();
        int resets = 0, damaged = 0;
        using var registered = new ManualResetEventSlim();
        var stop = false;
        Exception? failure = null;
        var reader = new Thread(() =>
        {
            try
            {
                using Participant me = c.Procs.Join();
                c.Queue.RegisterBackend(me);
                c.Queue.HandleCatchupInterrupts(me, (in SharedInvalidationMessage m) =>
                {
                    if (!SinvalCluster.IsIntact(m))
                        damaged++;
                    received.Add(m.ObjectId);
                }, () => resets++);
                registered.Set();
                // Never reads by itself: only when signalled.
                while (!Volatile.Read(ref stop))
                {
                    me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
                    me.ResetLatch();
                    me.ProcessInterrupts();
                }
                c.Queue.ReceiveAll(me, (in SharedInvalidationMessage m) => received.Add(m.ObjectId), () => resets++);
                c.Queue.UnregisterBackend(me);
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        }) { IsBackground = true };
        reader.Start();
        Assert.That(registered.Wait(TimeSpan.FromSeconds(20)), Is.True);

        using (Participant writer = c.Procs.Join())
        {
            var batch = new SharedInvalidationMessage[64];
            uint seq = 0;
            while (seq < total)
            {
                for (int i = 0; i < batch.Length; i++)
                    batch[i] = SinvalCluster.Message(7, seq++);
                c.Queue.SendMessages(writer, batch);
                // A slow writer: leave the reader time to answer its signals.
                if (seq % 1024 == 0)
                    Thread.Sleep(5);
            }
        }
        Volatile.Write(ref stop, true);
        Assert.That(reader.Join(TimeSpan.FromSeconds(60)), Is.True);
        Assert.That(failure, Is.Null, failure?.ToString());
        Assert.Multiple(() =>
        {
            Assert.That(resets, Is.Zero, "the reader was caught up, never reset");
            Assert.That(damaged, Is.Zero);
            SeqAssert.Equal(received, Enumerable.Range(0, total).Select(i => (uint)i), "every message, in order");
        });
    }
}
