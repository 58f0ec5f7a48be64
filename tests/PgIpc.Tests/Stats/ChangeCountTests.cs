/*-------------------------------------------------------------------------
 * ChangeCountTests.cs
 *   The changecount protocol of "PgIpc.Stats" under a writer that never
 *   stops: a reader's copy of the background writer's counters is always
 *   one whole round or the next, never half of one (every round adds one
 *   to three counters, so a consistent copy has them equal).
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Stats;

namespace PgIpc.Tests.Stats;

[Category(TestEnvironment.BusyAcrossProcesses)]
public sealed class ChangeCountTests
{
    [Test]
    public void AReaderNeverSeesHalfARound()
    {
        using Supervisor supervisor = new ClusterBuilder(TestEnvironment.UniqueKey("chgcnt"))
            .WithPlatform(PgIpcPlatform.Current)
            .WithLog(TextWriter.Null)
            .Build();
        SharedStats stats = supervisor.Cluster.Stats;
        using var stop = new CancellationTokenSource();
        long rounds = 0;
        var writer = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                stats.ReportBgWriterRound(1, hitMaxPages: false, allocations: 1);
                rounds++;
            }
        }) { IsBackground = true, Name = "stats writer" };
        writer.Start();
        int torn = 0, reads = 0;
        PgStatBgWriter last = default;
        try
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (reads < 200_000 && sw.Elapsed < TimeSpan.FromSeconds(20))
            {
                PgStatBgWriter s = stats.BgWriter();
                reads++;
                if (s.BuffersClean != s.Rounds || s.BuffersAlloc != s.Rounds)
                {
                    torn++;
                    last = s;
                }
            }
        }
        finally
        {
            stop.Cancel();
            writer.Join();
        }
        Assert.That(torn, Is.Zero, $"{torn} of {reads} reads saw half a round, e.g. {last}");
        Assert.That(rounds, Is.GreaterThan(0));
        Assert.That(stats.BgWriter().Rounds, Is.EqualTo(rounds), "every round counted once");
    }
}
