/*-------------------------------------------------------------------------
 * ProcArrayTests.cs
 *   Participant slots in one process, per backend: ranges and free lists
 *   per kind, hand-out and return, the "no free slot" error, bad options,
 *   and cleanup with the segment.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Proc;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ProcArrayTests(string backend)
{
    private LockCluster? _c;

    [TearDown]
    public void TearDown()
    {
        Participant.CurrentOrNull?.Dispose();
        _c?.Dispose();
        _c = null;
    }

    private LockCluster Create(ProcArrayOptions options) => _c = LockCluster.Create(PgIpcPlatform.Get(backend), options);

    private static T OnThread<T>(Func<T> f)
    {
        T result = default!;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { result = f(); }
            catch (Exception ex) { error = ex; }
        });
        t.Start();
        Assert.That(t.Join(TimeSpan.FromSeconds(20)), Is.True);
        if (error is not null)
            throw error;
        return result;
    }

    [Test]
    public void EachKindHasItsOwnRangeOfSlots()
    {
        LockCluster c = Create(new ProcArrayOptions(MaxBackends: 3, MaxAuxiliary: 2, MaxBackgroundWorkers: 2));
        Assert.That(c.Procs.MaxProcs, Is.EqualTo(7));
        using Participant b = c.Procs.Join(ProcKind.Backend);
        int aux = OnThread(() => { using Participant p = c.Procs.Join(ProcKind.Auxiliary); return p.ProcNumber; });
        int bgw = OnThread(() => { using Participant p = c.Procs.Join(ProcKind.BackgroundWorker); return p.ProcNumber; });
        Assert.Multiple(() =>
        {
            Assert.That(b.ProcNumber, Is.InRange(0, 2));
            Assert.That(aux, Is.InRange(3, 4));
            Assert.That(bgw, Is.InRange(5, 6));
            Assert.That(c.Procs.Capacity(ProcKind.Auxiliary), Is.EqualTo(2));
            Assert.That(c.Procs.FreeCount(ProcKind.Backend), Is.EqualTo(2));
            Assert.That(c.Procs.FreeCount(ProcKind.Auxiliary), Is.EqualTo(2), "the auxiliary slot came back");
        });
        PgProcInfo info = c.Procs.GetProcs().Single();
        Assert.Multiple(() =>
        {
            Assert.That(info.ProcNumber, Is.EqualTo(b.ProcNumber));
            Assert.That(info.Pid, Is.EqualTo(Environment.ProcessId));
            Assert.That(info.Kind, Is.EqualTo(ProcKind.Backend));
            Assert.That(info.LwWaiting, Is.EqualTo(LWLockWaitState.NotWaiting));
        });
    }

    [Test]
    public unsafe void TheSlotMirrorsTheLWLocksItsParticipantHolds()
    {
        LockCluster c = Create(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 0, MaxBackgroundWorkers: 0));
        using Participant me = c.Procs.Join();
        LWLockArray locks = c.Locks;
        locks[0].Acquire(me, LWLockMode.Exclusive);
        locks[1].Acquire(me, LWLockMode.Shared);
        locks[2].Acquire(me, LWLockMode.Exclusive);
        uint Tag(int i) => me.MirrorTag((LWLock*)Unsafe.AsPointer(ref locks[i]));
        Assert.Multiple(() =>
        {
            Assert.That(c.Procs.GetProcs().Single().HeldLWLocks, Is.EqualTo(3));
            Assert.That(Tag(0), Is.Not.Zero, "a lock in the main segment has a tag");
            Assert.That(new[] { me.Proc->HeldLWLocks[0], me.Proc->HeldLWLocks[1], me.Proc->HeldLWLocks[2] }, Is.EqualTo(new[] { Tag(0), Tag(1), Tag(2) }));
        });
        locks[1].Release(me); // out of order: the mirror closes the gap
        Assert.Multiple(() =>
        {
            Assert.That(me.Proc->NumHeldLWLocks, Is.EqualTo(2));
            Assert.That(new[] { me.Proc->HeldLWLocks[0], me.Proc->HeldLWLocks[1] }, Is.EqualTo(new[] { Tag(0), Tag(2) }));
        });
        me.ReleaseAllLWLocks();
        Assert.That(c.Procs.GetProcs().Single().HeldLWLocks, Is.Zero);
        int outside = 0;
        Assert.That(me.MirrorTag((LWLock*)&outside), Is.Zero, "a lock outside the main segment has no tag");
    }

    [Test]
    public void ASlotIsReusedAfterItsParticipantLeaves()
    {
        LockCluster c = Create(new ProcArrayOptions(MaxBackends: 1, MaxAuxiliary: 0, MaxBackgroundWorkers: 0));
        int first;
        using (Participant p = c.Procs.Join())
            first = p.ProcNumber;
        Assert.That(Participant.CurrentOrNull, Is.Null);
        for (int i = 0; i < 100; i++)
        {
            using Participant p = c.Procs.Join();
            Assert.That(p.ProcNumber, Is.EqualTo(first));
        }
        Assert.That(c.Procs.Statistics.HandedOut, Is.EqualTo(101));
    }

    [Test]
    public void NoFreeSlotIsAClearError()
    {
        LockCluster c = Create(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 1, MaxBackgroundWorkers: 0));
        using Participant a = c.Procs.Join();
        using var hold = new ManualResetEventSlim();
        using var joined = new ManualResetEventSlim();
        var t = new Thread(() =>
        {
            using Participant b = c.Procs.Join();
            joined.Set();
            hold.Wait(TimeSpan.FromSeconds(20));
        });
        t.Start();
        Assert.That(joined.Wait(TimeSpan.FromSeconds(20)), Is.True);
        try
        {
            Exception? ex = Assert.Throws<NoFreeProcSlotException>(() => OnThread(() => c.Procs.Join(ProcKind.Backend)));
            Assert.That(ex!.Message, Does.Contain("no free Backend participant slot").And.Contain("all 2"));
            Assert.Throws<NoFreeProcSlotException>(() => OnThread(() => c.Procs.Join(ProcKind.BackgroundWorker)), "a kind with no slots");
            Assert.That(OnThread(() => { using Participant x = c.Procs.Join(ProcKind.Auxiliary); return x.Kind; }), Is.EqualTo(ProcKind.Auxiliary), "other kinds are unaffected");
        }
        finally
        {
            hold.Set();
            Assert.That(t.Join(TimeSpan.FromSeconds(20)), Is.True);
        }
    }

    [Test]
    public void BadOptionsAreRefused()
    {
        Assert.Multiple(() =>
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => ProcArray.ShmemSize(new ProcArrayOptions(MaxBackends: 0)));
            Assert.Throws<ArgumentOutOfRangeException>(() => ProcArray.ShmemSize(new ProcArrayOptions(MaxAuxiliary: -1)));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => ProcArray.ShmemSize(new ProcArrayOptions(MaxBackends: ProcArray.MaxProcsLimit)))!.Message, Does.Contain("at most"));
            Assert.Throws<ArgumentNullException>(() => ProcArray.Init(null!, new ProcArrayOptions(), out _));
        });
    }

    [Test]
    public void AttachToASegmentWithoutSlotsIsAClearError()
    {
        ShmemSegment seg = ShmemSegment.Create(TestEnvironment.UniqueKey("noproc"), 1 << 20, PgIpcPlatform.Get(backend));
        try
        {
            Assert.That(Assert.Throws<PgIpcException>(() => ProcArray.Attach(seg))!.Message, Does.Contain("no participant slot array"));
        }
        finally
        {
            seg.Destroy();
        }
    }

    [Test]
    public void DestroyingTheSegmentClosesTheArrayAndItsParticipants()
    {
        LockCluster c = Create(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 0, MaxBackgroundWorkers: 0));
        Participant p = c.Procs.Join();
        ProcArray procs = c.Procs;
        c.Segment.Destroy();
        Assert.Multiple(() =>
        {
            Assert.That(p.IsDisposed, Is.True);
            Assert.That(Participant.CurrentOrNull, Is.Null);
            Assert.Throws<ObjectDisposedException>(() => procs.Join());
            Assert.Throws<ObjectDisposedException>(() => procs.GetProcs());
        });
        p.Dispose(); // idempotent
    }

    [Test]
    public void InitAgainInTheSameProcessReturnsTheSameView()
    {
        LockCluster c = Create(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 0, MaxBackgroundWorkers: 0));
        ProcArray again = ProcArray.Init(c.Segment, new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 0, MaxBackgroundWorkers: 0), out bool found);
        Assert.That(found, Is.True);
        Assert.That(again, Is.SameAs(c.Procs));
        Assert.That(ProcArray.Attach(c.Segment), Is.SameAs(c.Procs));
    }
}
