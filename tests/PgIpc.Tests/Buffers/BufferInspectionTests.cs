/*-------------------------------------------------------------------------
 * BufferInspectionTests.cs
 *   pg_buffercache-style inspection, per backend: rows and summary of a
 *   shared pool with known contents (used, dirty, pinned, usage counts),
 *   the same figures through a read-only descriptor view opened from a
 *   second attachment of the segment (no participant, no pool options),
 *   a segment without a pool, and local buffers' rows.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class BufferInspectionTests(string backend)
{
    private const int NumBuffers = 16;
    private BufferCluster? _c;

    [TearDown]
    public void TearDown()
    {
        _c?.Dispose();
        _c = null;
    }

    private BufferCluster Cluster() => _c = BufferCluster.Create(PgIpcPlatform.Get(backend), NumBuffers);

    /// <summary>
    /// Relation 3 gets blocks 0..5: 0..3 flushed, 4 and 5 left dirty; block 0 is read four more times (usage count 5)
    /// and block 2 stays pinned while <paramref name="inspect"/> runs.
    /// </summary>
    private void WithKnownContents(BufferCluster c, Action<Participant> inspect)
        => TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            BufferPool pool = c.Pool;
            for (int i = 0; i < 6; i++)
            {
                int b = pool.ReadBuffer(me, 3, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                pool.GetPage(me, b)[100] = (byte)i;
                pool.MarkBufferDirty(me, b);
                if (i < 4)
                    pool.FlushBuffer(me, b);
                pool.LockBuffer(me, b, BufferLockMode.Unlock);
                pool.ReleaseBuffer(me, b);
            }
            for (int k = 0; k < 4; k++)
                pool.ReleaseBuffer(me, pool.ReadBuffer(me, 3, ForkNumber.Main, 0));
            int held = pool.ReadBuffer(me, 3, ForkNumber.Main, 2);
            try
            {
                inspect(me);
            }
            finally
            {
                pool.ReleaseBuffer(me, held);
            }
        });

    [Test]
    public void RowsAndSummaryOfASharedPool()
    {
        BufferCluster c = Cluster();
        IReadOnlyList<BufferRow> rows = [];
        BufferSummary? summary = null, fromRows = null, afterRelease = null;
        WithKnownContents(c, _ =>
        {
            rows = BufferInspection.Rows(c.Pool);
            summary = BufferInspection.Summarize(c.Pool);
            fromRows = BufferInspection.Summarize(rows);
        });
        afterRelease = BufferInspection.Summarize(c.Pool);
        var withPage = rows.Where(r => r.Tag is not null).OrderBy(r => r.Tag!.Value.BlockNumber).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(rows, Has.Count.EqualTo(NumBuffers));
            Assert.That(rows.Select(r => r.Buffer), Is.EqualTo(Enumerable.Range(1, NumBuffers)));
            Assert.That(withPage.Select(r => r.Tag!.Value), Is.EqualTo(Enumerable.Range(0, 6).Select(i => new BufferTag(3, ForkNumber.Main, (uint)i))));
            Assert.That(withPage.Select(r => r.IsDirty), Is.EqualTo(new[] { false, false, false, false, true, true }));
            Assert.That(withPage.Select(r => r.IsValid), Has.All.True);
            Assert.That(withPage.Select(r => r.PinCount), Is.EqualTo(new[] { 0, 0, 1, 0, 0, 0 }));
            Assert.That(withPage[0].UsageCount, Is.EqualTo(S.MaxUsageCount), "read five times");
            Assert.That(withPage[1].UsageCount, Is.EqualTo(1));
            Assert.That(withPage[2].UsageCount, Is.EqualTo(2), "extended, then pinned again");
            Assert.That(rows.Where(r => r.Tag is null).Select(r => r.State), Has.All.EqualTo(0u), "untouched buffers");

            Assert.That(summary, Is.EqualTo(fromRows).Using<BufferSummary>(SameFigures));
            Assert.That(summary!.NumBuffers, Is.EqualTo(NumBuffers));
            Assert.That(summary.Used, Is.EqualTo(6));
            Assert.That(summary.Unused, Is.EqualTo(NumBuffers - 6));
            Assert.That(summary.Dirty, Is.EqualTo(2));
            Assert.That(summary.Pinned, Is.EqualTo(1));
            Assert.That(summary.AverageUsageCount, Is.EqualTo((5 + 1 + 2 + 1 + 1 + 1) / 6.0).Within(1e-9));
            Assert.That(summary.UsageCounts, Is.EqualTo(new[] { NumBuffers - 6, 4, 1, 0, 0, 1 }));
            Assert.That(afterRelease!.Pinned, Is.Zero);
        });
    }

    private static bool SameFigures(BufferSummary a, BufferSummary b)
        => a.NumBuffers == b.NumBuffers && a.Used == b.Used && a.Unused == b.Unused && a.Dirty == b.Dirty && a.Pinned == b.Pinned
           && a.AverageUsageCount == b.AverageUsageCount && a.UsageCounts.SequenceEqual(b.UsageCounts);

    [Test]
    public void DescriptorViewOfASecondAttachmentSeesTheSamePool()
    {
        BufferCluster c = Cluster();
        BufferSummary? direct = null, viewed = null;
        IReadOnlyList<BufferRow> poolRows = [], viewRows = [];
        int viewBuffers = 0, hand = -1;
        bool opened = false, clock = false;
        WithKnownContents(c, _ =>
        {
            // A second mapping of the same segment, as `pgipc inspect` makes: no ProcArray, no pool options.
            using ShmemSegment second = ShmemSegment.Attach(c.Segment.Handle, PgIpcPlatform.Get(backend));
            opened = BufferDescriptorView.TryOpen(second, out BufferDescriptorView? view);
            viewBuffers = view!.NumBuffers;
            direct = BufferInspection.Summarize(c.Pool);
            viewed = BufferInspection.Summarize(view);
            poolRows = BufferInspection.Rows(c.Pool);
            viewRows = BufferInspection.Rows(view);
            clock = view.TryReadClock(out hand, out uint passes);
        });
        Assert.Multiple(() =>
        {
            Assert.That(opened, Is.True);
            Assert.That(viewBuffers, Is.EqualTo(NumBuffers));
            Assert.That(viewed, Is.EqualTo(direct).Using<BufferSummary>(SameFigures));
            Assert.That(viewRows, Is.EqualTo(poolRows));
            Assert.That(clock, Is.True);
            Assert.That(hand, Is.InRange(0, NumBuffers - 1));
        });
    }

    [Test]
    public void ASegmentWithoutAPoolHasNoView()
    {
        var sizes = new ShmemSizeBuilder().RequestAddinShmemSpace("test", 4096);
        ShmemSegment seg = ShmemSegment.Create(TestEnvironment.UniqueKey("bufi"), sizes, PgIpcPlatform.Get(backend));
        try
        {
            bool found = BufferDescriptorView.TryOpen(seg, out BufferDescriptorView? view);
            Assert.Multiple(() =>
            {
                Assert.That(found, Is.False);
                Assert.That(view, Is.Null);
            });
        }
        finally
        {
            seg.Destroy();
        }
    }

    [Test]
    public void ViewOfADetachedSegmentIsAClearError()
    {
        BufferCluster c = Cluster();
        ShmemSegment second = ShmemSegment.Attach(c.Segment.Handle, PgIpcPlatform.Get(backend));
        BufferDescriptorView? view;
        try
        {
            Assert.That(BufferDescriptorView.TryOpen(second, out view), Is.True);
            Assert.Throws<BufferUsageException>(() => view!.ReadState(NumBuffers + 1));
        }
        finally
        {
            second.Dispose();
        }
        Assert.Throws<ObjectDisposedException>(() => BufferInspection.Summarize(view!));
    }

    [Test]
    public void LocalBufferRows()
    {
        BufferCluster c = Cluster();
        string dir = BufferCluster.NewDataDirectory();
        IReadOnlyList<BufferRow> before = [], rows = [];
        BufferSummary? summary = null;
        try
        {
            TestThreads.Run(1, _ =>
            {
                using Participant me = c.Procs.Join();
                using var local = new LocalBuffers(me, dir, 8);
                before = BufferInspection.Rows(local);
                for (int i = 0; i < 3; i++)
                {
                    int b = local.ReadBuffer(me, 9, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                    if (i == 1)
                        local.MarkBufferDirty(me, b);
                    local.ReleaseBuffer(me, b);
                }
                int held = local.ReadBuffer(me, 9, ForkNumber.Main, 2);
                local.IncrBufferRefCount(me, held);
                rows = BufferInspection.Rows(local);
                summary = BufferInspection.Summarize(local);
                local.ReleaseAllBuffers(me);
            });
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
        var withPage = rows.Where(r => r.Tag is not null).OrderBy(r => r.Tag!.Value.BlockNumber).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(before, Is.Empty, "nothing allocated before first use");
            Assert.That(rows.Select(r => r.Buffer), Is.EqualTo(Enumerable.Range(1, 8).Select(i => -i)));
            Assert.That(withPage.Select(r => r.Tag!.Value.BlockNumber), Is.EqualTo(new uint[] { 0, 1, 2 }));
            Assert.That(withPage.Select(r => r.IsDirty), Is.EqualTo(new[] { false, true, false }));
            Assert.That(withPage.Select(r => r.PinCount), Is.EqualTo(new[] { 0, 0, 2 }), "the owner's pin count");
            Assert.That(summary!.Used, Is.EqualTo(3));
            Assert.That(summary.Dirty, Is.EqualTo(1));
            Assert.That(summary.Pinned, Is.EqualTo(1));
        });
    }
}
