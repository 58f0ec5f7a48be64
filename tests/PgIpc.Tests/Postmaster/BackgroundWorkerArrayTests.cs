/*-------------------------------------------------------------------------
 * BackgroundWorkerArrayTests.cs
 *   The worker slots read back by the supervisor are input from another
 *   process: a corrupt length in a slot gives a clear error naming the
 *   structure, never an exception under the array's spinlock (which would
 *   leave it held) nor a read past the slot.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sync;

namespace PgIpc.Tests.Postmaster;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class BackgroundWorkerArrayTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private Supervisor? _supervisor;

    [TearDown]
    public void TearDown()
    {
        _supervisor?.Dispose();
        _supervisor = null;
    }

    private Cluster NewCluster()
    {
        _supervisor = new ClusterBuilder(TestEnvironment.UniqueKey("bgw"))
            .WithPlatform(_platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithMaxChildren(3)
            .WithLog(TextWriter.Null)
            .Build();
        return _supervisor.Cluster;
    }

    /// <summary>The header and slot <paramref name="i"/>, found as another process would (by name in the segment).</summary>
    private static BackgroundWorkerArrayHeader* Raw(ShmemSegment segment, int i, out BackgroundWorkerSlot* slot)
    {
        Assert.That(segment.TryFindStruct(BackgroundWorkerArray.ShmemName, out ShmemRegion r), Is.True);
        var h = (BackgroundWorkerArrayHeader*)r.Pointer;
        slot = (BackgroundWorkerSlot*)(h + 1) + i;
        return h;
    }

    [Test]
    public void ACorruptLengthInASlotGivesAClearErrorAndLeavesTheLockFree()
    {
        Cluster cluster = NewCluster();
        BackgroundWorkerArray workers = cluster.BackgroundWorkers;
        BackgroundWorkerHandle a = workers.Register(new ChildSpec("worker a", "/bin/true", ["x", "y"]));
        BackgroundWorkerHandle b = workers.Register(new ChildSpec("worker b", "/bin/true", []));
        BackgroundWorkerArrayHeader* header = Raw(cluster.Segment, a.Slot, out BackgroundWorkerSlot* slot);
        int nameLength = slot->NameLength;
        int commandLength = slot->CommandLength;

        foreach ((string field, int value) in (ReadOnlySpan<(string, int)>)[("NameLength", -1), ("NameLength", 1000), ("CommandLength", 5000), ("CommandLength", -7)])
        {
            if (field == "NameLength")
                slot->NameLength = value;
            else
                slot->CommandLength = value;
            PgIpcException? ex = Assert.Catch<PgIpcException>(() => workers.RegisteredSlots(), $"{field} = {value}");
            bool held = SLock.IsHeld(ref header->Lock.Value);
            if (held)
                SLock.Release(ref header->Lock.Value);
            Assert.That(held, Is.False, $"{field} = {value}: RegisteredSlots left the {BackgroundWorkerArray.ShmemName} spinlock held");
            Assert.That(ex!.Message, Does.Contain(BackgroundWorkerArray.ShmemName).And.Contain($"slot {a.Slot}").And.Contain(field).And.Contain(value.ToString()));
            // The lock is free: other calls still work.
            Assert.That(b.GetStatus(), Is.EqualTo(BgwHandleStatus.NotYetStarted));
            slot->NameLength = nameLength;
            slot->CommandLength = commandLength;
        }

        List<(int Slot, int Generation, ChildSpec Spec)> list = workers.RegisteredSlots();
        Assert.That(list.Where(e => e.Slot == a.Slot || e.Slot == b.Slot).Select(e => e.Spec.Name), Is.EquivalentTo(new[] { "worker a", "worker b" }));
        ChildSpec specA = list.Single(e => e.Slot == a.Slot).Spec;
        Assert.That(specA.Arguments, Is.EqualTo(new[] { "x", "y" }));
    }

    [Test]
    public void TheSupervisorFreesACorruptRegistrationAndKeepsAdopting()
    {
        Cluster cluster = NewCluster();
        _supervisor!.Start();
        BackgroundWorkerArray workers = cluster.BackgroundWorkers;
        BackgroundWorkerHandle bad = workers.Register(new ChildSpec("corrupt worker", "/bin/true", []));
        Raw(cluster.Segment, bad.Slot, out BackgroundWorkerSlot* slot);
        slot->CommandLength = int.MaxValue; // as another process could have written it
        PMSignal.SendPostmasterSignal(cluster.Procs, PMSignalReason.BackgroundWorkerChange);
        Poll.WaitFor(() => bad.GetStatus() == BgwHandleStatus.Stopped, "the supervisor to free the corrupt registration");
        Assert.That(workers.RegisteredSlots().Where(e => e.Slot == bad.Slot && e.Generation == bad.Generation), Is.Empty);
        // The array's lock is free and the slot reusable.
        BackgroundWorkerHandle next = workers.Register(new ChildSpec("next worker", "/bin/true", []));
        Assert.That(workers.RegisteredSlots().Where(e => e.Slot == next.Slot).Select(e => e.Spec.Name), Is.EqualTo(new[] { "next worker" }));
    }

    [Test]
    public void ACorruptSlotCountIsRefusedAtAttach()
    {
        Cluster cluster = NewCluster();
        BackgroundWorkerArrayHeader* header = Raw(cluster.Segment, 0, out _);
        int n = header->NumSlots;
        try
        {
            header->NumSlots = 1 << 20;
            var ex = Assert.Throws<PgIpcException>(() => BackgroundWorkerArray.Attach(cluster.Segment));
            Assert.That(ex!.Message, Does.Contain(BackgroundWorkerArray.ShmemName).And.Contain("1048576"));
        }
        finally
        {
            header->NumSlots = n;
        }
        Assert.That(BackgroundWorkerArray.Attach(cluster.Segment).NumSlots, Is.EqualTo(n));
    }
}
