/*-------------------------------------------------------------------------
 * CorruptionTests.cs
 *   Every offset, count and length read from shared memory, corrupted one
 *   at a time: the reader gets a ShmemCorruptException naming the
 *   structure and the field (or recovers), never an access violation, a
 *   hang or Environment.FailFast (issue 13 item 6).
 *
 * NOTES
 *   The live cluster's bytes are written by a worker process ("poke"), as
 *   a corrupting participant would; the test process then attaches afresh
 *   or looks up what it reads. Every poked range is saved first and
 *   written back in TearDown, so the cluster shuts down normally. Stale
 *   segments (Unix backends only: a Windows mapping dies with its last
 *   handle) are made in-process: a bare segment whose creator pid is set to
 *   a pid that cannot exist and that this process then leaves.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Dsm;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Shmem;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class CorruptionTests(string backend)
{
    internal const string RegionName = "test.corrupt";
    internal const long RegionSize = 64 * 1024;
    internal const string HashName = "test.hash";
    internal const ulong TocMagic = 0x434F_5252_5550_5400; // "CORRUPT"
    /// <summary>A pid no process can have (above every OS's pid range we run on): "dead" for every liveness check.</summary>
    internal const int DeadPid = 0x3FFF_FFF0;

    private IPgIpcPlatform _platform = null!;
    private Supervisor? _supervisor;
    private readonly List<ChildWorker> _children = [];
    private readonly List<(long Offset, byte[] Bytes)> _saved = [];
    private ChildWorker? _poker;

    [SetUp]
    public void SetUp() => _platform = PgIpcPlatform.Get(backend);

    [TearDown]
    public void TearDown()
    {
        if (_supervisor is not null)
        {
            // Undo the scribbles (newest first) so that the cluster shuts down as usual.
            ShmemSegment seg = _supervisor.Cluster.Segment;
            for (int i = _saved.Count - 1; i >= 0; i--)
                _saved[i].Bytes.CopyTo(new Span<byte>(seg.Base + _saved[i].Offset, _saved[i].Bytes.Length));
        }
        _saved.Clear();
        foreach (ChildWorker c in _children)
            c.Dispose();
        _children.Clear();
        _poker = null;
        _supervisor?.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        _supervisor = null;
    }

    private ShmemSegment Live()
    {
        _supervisor = BuildCluster(_platform, TestEnvironment.UniqueKey("corrupt"));
        return _supervisor.Cluster.Segment;
    }

    /// <summary>A cluster (no buffer pool) with a DSM table, a region for a toc and a queue, and room for a shared hash.</summary>
    internal static Supervisor BuildCluster(IPgIpcPlatform platform, string key)
        => new ClusterBuilder(key)
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithDsmOptions(new DsmOptions(MaxSegments: 8))
            .AddModule(ShmemModule.Struct(RegionName, RegionSize))
            .RequestShmem(HashName, SharedHash<long, long>.EstimateSize(64, 4))
            .WithLog(TextWriter.Null)
            .Build();

    /// <summary>Writes <paramref name="bytes"/> at <paramref name="offset"/> of the live segment from a worker process (saved for TearDown).</summary>
    private void Poke(long offset, ReadOnlySpan<byte> bytes)
    {
        ShmemSegment seg = _supervisor!.Cluster.Segment;
        _saved.Add((offset, new ReadOnlySpan<byte>(seg.Base + offset, bytes.Length).ToArray()));
        if (_poker is null)
        {
            _poker = Workers.Start(backend, _children);
            _poker.Send($"attach {seg.Handle}");
        }
        _poker.Send($"poke {offset} {Convert.ToHexString(bytes)}");
    }

    private void Poke(long offset, int value) => Poke(offset, BitConverter.GetBytes(value));

    private void Poke(long offset, long value) => Poke(offset, BitConverter.GetBytes(value));

    internal static long OffsetOf<T>(string field) => Marshal.OffsetOf<T>(field).ToInt64();

    /// <summary>Segment offset of the ShmemIndex entry called <paramref name="name"/>.</summary>
    internal static long IndexEntryOffset(ShmemSegment seg, string name)
    {
        var entries = (ShmemIndexEntry*)(seg.IndexHeader + 1);
        byte[] want = System.Text.Encoding.UTF8.GetBytes(name);
        for (int i = 0; i < seg.IndexCapacity; i++)
        {
            ShmemIndexEntry* e = entries + i;
            if (e->State != 0 && e->NameLength == want.Length && new ReadOnlySpan<byte>(e->Name, want.Length).SequenceEqual(want))
                return (byte*)e - seg.Base;
        }
        throw new InvalidOperationException($"no index entry {name}");
    }

    private static ShmemRegion Struct(ShmemSegment seg, string name)
        => seg.TryFindStruct(name, out ShmemRegion r) ? r : throw new InvalidOperationException($"no structure {name}");

    /// <summary>What <paramref name="action"/> threw, which must be a ShmemCorruptException naming <paramref name="structure"/> and <paramref name="field"/>.</summary>
    private static ShmemCorruptException ExpectCorrupt(Action action, string structure, string field)
    {
        ShmemCorruptException ex = Assert.Catch<ShmemCorruptException>(() => action())!;
        Assert.That(ex.Structure, Does.Contain(structure), ex.Message);
        Assert.That(ex.Field, Does.Contain(field), ex.Message);
        Assert.That(ex, Is.InstanceOf<PgIpcException>());
        return ex;
    }

    /// <summary>Attaches a second, fresh view of the live segment (the path a new process takes), runs <paramref name="use"/> on it and detaches.</summary>
    private void WithFreshView(Action<ShmemSegment> use)
    {
        ShmemSegment view = ShmemSegment.Attach(_supervisor!.Cluster.Segment.Handle, _platform);
        try { use(view); }
        finally { view.Dispose(); }
    }

    // ------------------------------------------------------------------
    // The segment header and the ShmemIndex
    // ------------------------------------------------------------------

    [Test]
    public void HeaderIndexCapacityIsCheckedAtAttach()
    {
        Live();
        Poke(OffsetOf<PgShmemHeader>(nameof(PgShmemHeader.IndexCapacity)), 3);
        ExpectCorrupt(() => WithFreshView(_ => { }), "segment header", "IndexCapacity");
    }

    [Test]
    public void HeaderIndexOffsetIsCheckedAtAttach()
    {
        ShmemSegment seg = Live();
        Poke(OffsetOf<PgShmemHeader>(nameof(PgShmemHeader.IndexOffset)), seg.TotalSize - 64);
        ExpectCorrupt(() => WithFreshView(_ => { }), "segment header", "IndexOffset");
    }

    [Test]
    public void FreeOffsetIsCheckedAtAttachAndBeforeAnAllocation()
    {
        ShmemSegment seg = Live();
        Poke(OffsetOf<PgShmemHeader>(nameof(PgShmemHeader.FreeOffset)), -4096L);
        ExpectCorrupt(() => WithFreshView(_ => { }), "segment header", "FreeOffset");
        // The live segment (attached before) checks it under its allocation lock and changes nothing.
        ExpectCorrupt(() => seg.Alloc(64), "segment header", "FreeOffset");
        ExpectCorrupt(() => seg.InitStruct("test.new", 64, out _), "segment header", "FreeOffset");
    }

    [Test]
    public void IndexEntryOffsetIsCheckedAtLookup()
    {
        ShmemSegment seg = Live();
        long entry = IndexEntryOffset(seg, RegionName);
        Poke(entry + OffsetOf<ShmemIndexEntry>(nameof(ShmemIndexEntry.Offset)), 0x7FFF_0000_0000L);
        ShmemCorruptException ex = ExpectCorrupt(() => seg.TryFindStruct(RegionName, out _), "ShmemIndex entry", "offset");
        Assert.That(ex.Message, Does.Contain(seg.TotalSize.ToString()), "the message carries the segment's size");
        ExpectCorrupt(() => seg.InitStruct(RegionName, RegionSize, out _), "ShmemIndex entry", "offset");
        ExpectCorrupt(() => seg.GetAllocations(), "ShmemIndex entry", "offset");
    }

    [Test]
    public void IndexEntrySizeAndNameLengthAndStateAreChecked()
    {
        ShmemSegment seg = Live();
        long entry = IndexEntryOffset(seg, RegionName);
        Poke(entry + OffsetOf<ShmemIndexEntry>(nameof(ShmemIndexEntry.Size)), seg.TotalSize);
        ExpectCorrupt(() => seg.TryFindStruct(RegionName, out _), "ShmemIndex entry", "size");
        TearDownSaved(seg);

        Poke(entry + OffsetOf<ShmemIndexEntry>(nameof(ShmemIndexEntry.NameLength)), 1000);
        ExpectCorrupt(() => seg.GetAllocations(), "ShmemIndex entry", "name length");
        TearDownSaved(seg);

        // An unknown state is not waited on for ever.
        Poke(entry + OffsetOf<ShmemIndexEntry>(nameof(ShmemIndexEntry.State)), 7);
        ExpectCorrupt(() => seg.TryFindStruct(RegionName, out _), "ShmemIndex entry", "state");
    }

    /// <summary>Writes the saved bytes back now (between the steps of one test).</summary>
    private void TearDownSaved(ShmemSegment seg)
    {
        for (int i = _saved.Count - 1; i >= 0; i--)
            _saved[i].Bytes.CopyTo(new Span<byte>(seg.Base + _saved[i].Offset, _saved[i].Bytes.Length));
        _saved.Clear();
    }

    // ------------------------------------------------------------------
    // ProcGlobal and PGPROC
    // ------------------------------------------------------------------

    [Test]
    public void ProcGlobalCountsAndOffsetAreCheckedAtAttach()
    {
        ShmemSegment seg = Live();
        long pg = Struct(seg, ProcArray.ShmemName).Offset;
        Poke(pg + OffsetOf<ProcGlobalHeader>(nameof(ProcGlobalHeader.MaxProcs)), 1 << 17);
        ExpectCorrupt(() => WithFreshView(v => ProcArray.TryReadProcs(v, out _)), "ProcGlobal", "MaxProcs");
        TearDownSaved(seg);

        Poke(pg + OffsetOf<ProcGlobalHeader>(nameof(ProcGlobalHeader.ProcsOffset)), seg.TotalSize - 256);
        ExpectCorrupt(() => WithFreshView(v => ProcArray.TryReadProcs(v, out _)), "ProcGlobal", "ProcsOffset");
    }

    [Test]
    public void AFreeListLinkOutsideItsKindIsReportedByJoinAndFreeCount()
    {
        ShmemSegment seg = Live();
        ProcArray procs = _supervisor!.Cluster.Procs;
        long pg = Struct(seg, ProcArray.ShmemName).Offset;
        // FreeHeads[Backend]: a slot far outside the array.
        Poke(pg + OffsetOf<ProcGlobalHeader>(nameof(ProcGlobalHeader.FreeHeads)), 5000);
        ExpectCorrupt(() => procs.FreeCount(ProcKind.Backend), "ProcGlobal", "free list of Backend");
        ExpectCorrupt(() => procs.Join(ProcKind.Backend).Dispose(), "ProcGlobal", "free list of Backend");
        Assert.That(Participant.CurrentOrNull, Is.Null, "the failed join left no participant behind");
    }

    [Test]
    public void ADeadSlotsRecordedWaitLockOffsetIsCheckedBeforeTheRepair()
    {
        ShmemSegment seg = Live();
        ProcArray procs = _supervisor!.Cluster.Procs;
        long slot = Struct(seg, ProcArray.ShmemName).Offset + ShmemSize.CacheLineAlign(sizeof(ProcGlobalHeader)) + (long)(procs.MaxProcs - 1) * sizeof(PgProc);
        // A dead participant (its pid gone) whose recorded wait-lock offset points far outside the segment.
        Poke(slot + OffsetOf<PgProc>(nameof(PgProc.LwWaitLockOffset)), 0x7FFF_0000_0000L);
        Poke(slot + OffsetOf<PgProc>(nameof(PgProc.Pid)), DeadPid);
        ShmemCorruptException ex = ExpectCorrupt(() => procs.ReclaimDeadSlots(), "PGPROC slot", "wait-lock offset");
        Assert.That(ex.Message, Does.Contain("0x7fff00000000"));
    }

    [Test]
    public void TrancheTableCapacityIsChecked()
    {
        ShmemSegment seg = Live();
        long table = Struct(seg, LWLockTranches.ShmemName).Offset;
        Poke(table + OffsetOf<LWLockTrancheHeader>(nameof(LWLockTrancheHeader.Capacity)), 1 << 24);
        ExpectCorrupt(() => LWLockTranches.NewTrancheId(seg, "test.tranche"), "LWLock tranche table", "Capacity");
        // Naming a tranche for a message never throws: the walk is clamped to what the structure holds.
        Assert.That(LWLockTranches.NameOf(seg, 60000), Is.EqualTo("tranche 60000"));
    }

    // ------------------------------------------------------------------
    // DSM control table
    // ------------------------------------------------------------------

    [Test]
    public void DsmControlTableIsCheckedAtAttach()
    {
        ShmemSegment seg = Live();
        long dsm = Struct(seg, DsmRegistry.ShmemName).Offset;
        Poke(dsm + OffsetOf<DsmControlHeader>(nameof(DsmControlHeader.MaxItems)), 1 << 19);
        ExpectCorrupt(() => WithFreshView(v => DsmRegistry.Attach(v)), "DSM control table", "MaxItems");
        TearDownSaved(seg);

        Poke(dsm + OffsetOf<DsmControlHeader>(nameof(DsmControlHeader.NItems)), 1 << 20);
        ExpectCorrupt(() => WithFreshView(v => DsmRegistry.Attach(v)), "DSM control table", "NItems");
        // The live registry's walks are bounded by the MaxItems it cached: no read past the table.
        Assert.That(_supervisor!.Cluster.Dsm.LiveSegments(), Is.EqualTo(0));
        TearDownSaved(seg);

        long dd = dsm + sizeof(DsmControlHeader) + 8L * sizeof(DsmControlItem);
        Poke(dd, 1 << 30);
        ExpectCorrupt(() => WithFreshView(v => DsmRegistry.Attach(v)), "DSM control table", "data directory length");
    }

    [Test]
    public void AnItemOverwrittenUnderAHeldReferenceIsReportedOnDetachInsteadOfFailFast()
    {
        ShmemSegment seg = Live();
        DsmSegment d = DsmSegment.Create(_supervisor!.Cluster.Dsm, 4096)!;
        long items = Struct(seg, DsmRegistry.ShmemName).Offset + sizeof(DsmControlHeader);
        long item = -1;
        for (int i = 0; i < 8 && item < 0; i++)
            if (((DsmControlItem*)(seg.Base + items))[i].Handle == d.Handle)
                item = items + (long)i * sizeof(DsmControlItem);
        Assert.That(item, Is.GreaterThan(0));
        // Another process writes another handle into the item this process holds a reference in (this was a FailFast).
        Poke(item + OffsetOf<DsmControlItem>(nameof(DsmControlItem.Handle)), (int)(d.Handle ^ 0x5A5A5A5A));
        ShmemCorruptException ex = ExpectCorrupt(() => d.Detach(), "DSM control table", "Handle / RefCnt");
        Assert.That(ex.Message, Does.Contain(d.Handle.ToString()));
        // Nothing was changed: the cluster's destroy removes the segment once the item is written back (TearDown).
    }

    // ------------------------------------------------------------------
    // shm_toc and shm_mq (in a region of the main segment)
    // ------------------------------------------------------------------

    private (ShmemRegion Region, ShmTocChunk Queue) MakeTocAndQueue(ShmemSegment seg)
    {
        ShmemRegion region = Struct(seg, RegionName);
        ShmToc toc = ShmToc.Create(TocMagic, region);
        ShmTocChunk chunk = toc.Allocate(ShmMq.SizeFor(1024));
        ShmMq.Create(chunk);
        toc.Insert(1, chunk);
        return (region, chunk);
    }

    [Test]
    public void TocCountsAndEntryOffsetsAreChecked()
    {
        ShmemSegment seg = Live();
        (ShmemRegion region, _) = MakeTocAndQueue(seg);
        Poke(region.Offset + OffsetOf<ShmTocHeader>(nameof(ShmTocHeader.NumEntries)), int.MaxValue);
        ExpectCorrupt(() => ShmToc.Attach(TocMagic, region), "shm_toc header", "NumEntries");
        TearDownSaved(seg);

        Poke(region.Offset + OffsetOf<ShmTocHeader>(nameof(ShmTocHeader.AllocatedBytes)), -1L);
        ExpectCorrupt(() => ShmToc.Attach(TocMagic, region), "shm_toc header", "AllocatedBytes");
        TearDownSaved(seg);

        ShmToc toc = ShmToc.Attach(TocMagic, region);
        Poke(region.Offset + sizeof(ShmTocHeader) + OffsetOf<ShmTocEntry>(nameof(ShmTocEntry.Offset)), RegionSize + 4096);
        ExpectCorrupt(() => toc.Lookup(1), "shm_toc entry 0", "offset");
    }

    [Test]
    public void QueueRingAndCountersAreCheckedAtOpenAndAttach()
    {
        ShmemSegment seg = Live();
        (_, ShmTocChunk chunk) = MakeTocAndQueue(seg);
        long mq = chunk.Pointer - seg.Base;
        Poke(mq + OffsetOf<ShmMqHeader>(nameof(ShmMqHeader.RingSize)), 1L << 40);
        ExpectCorrupt(() => ShmMq.Open(chunk), "shm_mq header", "RingSize");
        TearDownSaved(seg);

        ShmMq queue = ShmMq.Open(chunk);
        using Participant me = _supervisor!.Cluster.Procs.Join();
        queue.SetReceiver(me);
        Poke(mq + OffsetOf<ShmMqHeader>(nameof(ShmMqHeader.BytesWritten)), -8L);
        ExpectCorrupt(() => queue.AttachAsReceiver(me), "shm_mq header", "BytesRead / BytesWritten");
    }

    // ------------------------------------------------------------------
    // Shared hash chains
    // ------------------------------------------------------------------

    [Test]
    public void HashChainsAreBoundedByCapacity()
    {
        ShmemSegment seg = Live();
        var hash = SharedHash<long, long>.Init(seg, HashName, 64, 4, out _);
        uint h = SharedHash<long, long>.GetHashCode(42);
        Assert.That(hash.TryInsert(42, h, 4200), Is.True);
        long table = Struct(seg, HashName).Offset;
        long buckets = table + 64 + 4 * 64;
        int nBuckets = 4 * 16;
        // Every bucket points at element 7, whose link points back at itself: a cycle for every key but its own.
        long elements = table + ShmemSize.AlignUp(64 + 4 * 64 + nBuckets * 4, 64);
        int elementSize = 24;
        for (int b = 0; b < nBuckets; b++)
            Poke(buckets + b * 4L, 7);
        Poke(elements + 7L * elementSize, 7);
        ExpectCorrupt(() => hash.TryFind(12345, SharedHash<long, long>.GetHashCode(12345), out _), $"shared hash table \"{HashName}\"", "chain");
        ExpectCorrupt(() => hash.Remove(12345, SharedHash<long, long>.GetHashCode(12345), out _), $"shared hash table \"{HashName}\"", "chain");
        TearDownSaved(seg);

        // A link outside the elements.
        for (int b = 0; b < nBuckets; b++)
            Poke(buckets + b * 4L, 1000);
        ExpectCorrupt(() => hash.TryFind(42, h, out _), $"shared hash table \"{HashName}\"", "chain");
    }

    // ------------------------------------------------------------------
    // Stale segments (cleanup and Create): Unix backends only
    // ------------------------------------------------------------------

    /// <summary>A bare segment of <paramref name="key"/> that looks like a crashed run's: creator <see cref="DeadPid"/>, nobody attached.</summary>
    internal static string MakeStale(IPgIpcPlatform platform, string key, Action<ShmemSegment>? scribble = null)
    {
        ShmemSegment seg = ShmemSegment.Create(key, 256 * 1024, platform);
        string id = seg.Handle.Id;
        scribble?.Invoke(seg);
        ((PgShmemHeader*)seg.Base)->CreatorPid = DeadPid;
        seg.Dispose(); // leaves it: the OS object stays, this process's attach slot is cleared
        return id;
    }

    [Test, OnlyOn(Os.Unix, "stale segments exist only where a segment outlives its processes")]
    public void AStaleSegmentOfAnUnknownLayoutVersionIsReportedAndNeverWalkedOrRemoved()
    {
        string key = TestEnvironment.UniqueKey("stale-ver");
        string id = MakeStale(_platform, key, s =>
        {
            // A layout this build does not know, whose index (in our layout's place) would be garbage to walk.
            ((PgShmemHeader*)s.Base)->LayoutVersion = 99;
            ((PgShmemHeader*)s.Base)->IndexCapacity = 3;
        });
        try
        {
            StaleSegmentReport row = ClusterLeftovers.CleanupStale(_platform, dryRun: true).Single(r => r.Id == id);
            Assert.That(row.Verdict, Is.EqualTo(StaleVerdict.UnknownLayout));
            Assert.That(row.Reason, Does.Contain("layout version 99"));

            ShmemSegment? made = null;
            Exception? failure = Outcome.Capture(() => made = ShmemSegment.Create(key, new ShmemSizeBuilder(), _platform, ClusterLeftovers.Instance));
            try
            {
                if (made is null)
                {
                    // One name per key (posix): the create is refused, naming the segment and its version.
                    Assert.That(failure, Is.InstanceOf<PgIpcException>());
                    Assert.That(failure!.Message, Does.Contain("layout version 99"));
                }
                else
                {
                    Assert.That(made.Handle.Id, Is.Not.EqualTo(id), "the next key was taken (SysV)");
                }
                Assert.That(_platform.SharedMemory.QueryStatus(id).Exists, Is.True, "a segment of an unknown layout is not removed");
            }
            finally
            {
                made?.Destroy();
            }
        }
        finally
        {
            _platform.SharedMemory.Remove(id);
        }
    }

    [Test, OnlyOn(Os.Unix, "stale segments exist only where a segment outlives its processes")]
    public void AStaleSegmentWithACorruptSlotArrayIsRemovedWithTheDamageReported()
    {
        string key = TestEnvironment.UniqueKey("stale-pg");
        string id = MakeStale(_platform, key, s =>
        {
            // A ProcGlobal whose slot count runs far past the segment (no OS objects are named: nothing to leak).
            ShmemRegion r = s.InitStruct(ProcArray.ShmemName, ProcArray.ShmemSize(new ProcArrayOptions(2, 0, 0)), out _);
            var h = (ProcGlobalHeader*)r.Pointer;
            h->Magic = ProcGlobalHeader.MagicValue;
            h->NumBackends = 1 << 17;
            h->MaxProcs = 1 << 17;
            h->ProcsOffset = r.Offset + ShmemSize.CacheLineAlign(sizeof(ProcGlobalHeader));
        });
        bool removed = false;
        try
        {
            StaleSegmentReport row = ClusterLeftovers.CleanupStale(_platform, dryRun: true).Single(r => r.Id == id);
            Assert.That(row.Verdict, Is.EqualTo(StaleVerdict.Stale));
            Assert.That(row.Reason, Does.Contain("ProcGlobal").And.Contain("MaxProcs"));

            ShmemSegment made = ShmemSegment.Create(key, new ShmemSizeBuilder(), _platform, ClusterLeftovers.Instance);
            made.Destroy();
            Assert.That(made.ReplacedStaleSegment, Is.True, "recovered: the corrupt stale segment was removed");
            removed = !_platform.SharedMemory.QueryStatus(id).Exists;
            Assert.That(removed, Is.True);
        }
        finally
        {
            if (!removed)
                _platform.SharedMemory.Remove(id);
        }
    }
}

/// <summary>The Linux backend's futex word (in PGPROC, shared) overflowed by a scribble: the post recovers (it was Environment.FailFast).</summary>
[OnlyOn(Os.Linux, "the futex semaphores are the linux backend's")]
public sealed unsafe class FutexOverflowTests
{
    [Test]
    public void APostOnAnOverflowedCountLeavesOneUnitInsteadOfFailFast()
    {
        IPgIpcPlatform linux = PgIpcPlatform.Get("linux");
        ShmemSegment seg = ShmemSegment.Create(TestEnvironment.UniqueKey("futex"), 1 << 20, linux);
        try
        {
            ShmemRegion r = seg.InitStruct("test.sems", ProcSemaphoreStorage.MaxSize * 2, out _);
            IProcSemaphoreSet sems = linux.Semaphores.Create($"t{Environment.ProcessId}.futex", (nint)r.Pointer, ProcSemaphoreStorage.MaxSize, 2);
            try
            {
                *(int*)r.Pointer = int.MaxValue; // another process's scribble on the count
                sems.Unlock(0);
                Assert.That(*(int*)r.Pointer, Is.EqualTo(1), "the count is reset to one posted unit");
                Assert.That(sems.TryLock(0), Is.True);
                Assert.That(sems.TryLock(0), Is.False);
            }
            finally
            {
                sems.Destroy();
            }
        }
        finally
        {
            seg.Destroy();
        }
    }
}
