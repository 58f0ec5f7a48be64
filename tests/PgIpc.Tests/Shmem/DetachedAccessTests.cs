/*-------------------------------------------------------------------------
 * DetachedAccessTests.cs
 *   After a segment is gone from this process, its objects never read the
 *   unmapped memory (a crash of the host): immutable facts were copied at
 *   attach and stay readable, everything else fails with a clear error.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Shmem;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class DetachedAccessTests(string backend)
{
    [Test]
    public void ImmutableFactsStayReadableAndTheRestFailsClearlyAfterTheSegmentIsGone()
    {
        LockCluster c = LockCluster.Create(PgIpcPlatform.Get(backend));
        ShmemSegment seg = c.Segment;
        ProcArray procs = c.Procs;
        long size = seg.TotalSize;
        int supervisor = procs.SupervisorPid;
        c.Dispose(); // the supervisor destroys the segment: unmapped in this process
        Assert.Multiple(() =>
        {
            Assert.That(seg.IsAttached, Is.False);
            Assert.That(seg.TotalSize, Is.EqualTo(size));
            Assert.That(procs.SupervisorPid, Is.EqualTo(supervisor));
            Assert.Catch<InvalidOperationException>(() => seg.GetInfo());
            Assert.Catch<InvalidOperationException>(() => _ = seg.FreeBytes);
            Assert.Throws<ObjectDisposedException>(() => _ = procs.Statistics);
        });
    }

    [Test]
    public void TheSupervisorsViewStaysReadableAfterShutdown()
    {
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("detached")).WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 1, MaxBackgroundWorkers: 1)).WithLog(TextWriter.Null).Build();
        Cluster view = s.Cluster;
        s.Dispose();
        Assert.Multiple(() =>
        {
            Assert.That(view.IsAttached, Is.False);
            Assert.That(view.SupervisorPid, Is.EqualTo(Environment.ProcessId));
            Assert.That(view.Segment.TotalSize, Is.GreaterThan(0));
            Assert.That(view.ShutdownRequested, Is.False, "read from nothing: the flags went with the segment");
        });
    }
}
