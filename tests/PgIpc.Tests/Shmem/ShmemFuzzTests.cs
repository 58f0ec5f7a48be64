/*-------------------------------------------------------------------------
 * ShmemFuzzTests.cs
 *   Random corruption (FsCheck) of the structures every process reads from
 *   shared memory, in a live and in a stale segment: attach, inspect,
 *   cleanup and Create must end in a PgIpcException or succeed (a
 *   recovery), never crash the test host and never hang (issue 13 item 6).
 *
 * NOTES
 *   A case is one to three writes of 1, 2, 4 or 8 random bytes at random
 *   places of the regions a reader derives addresses and counts from: the
 *   segment header, the ShmemIndex (its header and first entries), the
 *   ProcGlobal header and first slot, a shm_toc header with its entries,
 *   a shm_mq header, and the DSM control table's header, first items and
 *   data directory length. Lock words (spinlocks, an LWLock's state) and
 *   the states that are waited on while their writer lives (the header's
 *   State, an index entry's State) are left out: a lock word corrupted to
 *   "held" ends in the stuck-spinlock error after its minute and a state
 *   left Initializing under a live pid ends after a 30 s wait: bounded, but
 *   too slow for a case's timeout, and neither is an offset, count or
 *   length.
 *
 *   Live: one cluster for the whole run; a worker process writes each case
 *   (as a corrupting participant would) and every region is written back
 *   from a snapshot after the case. The case then attaches a fresh view
 *   and reads everything as `pgipc inspect` and a child's attach do, uses
 *   the live cluster's own views (slot list, free lists, dead-slot
 *   reclamation, the DSM table), examines the segment as cleanup does and
 *   tries to Create the same cluster. Stale (Unix backends): each case
 *   makes a segment holding the same structures without OS objects,
 *   corrupts it in-process as a dead process left it, leaves it, and runs
 *   cleanup's examination and Create with the cluster's stale handler;
 *   whatever is left is removed by id.
 *
 *   Every case runs on its own thread under a timeout; any exception that
 *   is not a PgIpcException fails the property (FsCheck prints the case
 *   and its seed).
 *-------------------------------------------------------------------------
 */
using FsCheck;
using FsCheck.Fluent;
using NUnit.Framework;
using PgIpc.Dsm;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Shmem;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class ShmemFuzzTests(string backend)
{
    /// <summary>Cases per property (a live run of 200 takes about a second on Linux and a few under Wine).</summary>
    private const int Cases = 200;

    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(20);

    private IPgIpcPlatform _platform = null!;
    private readonly List<ChildWorker> _children = [];

    [SetUp]
    public void SetUp() => _platform = PgIpcPlatform.Get(backend);

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker c in _children)
            c.Dispose();
        _children.Clear();
    }

    /// <summary>A range of bytes corruptions may hit: <see cref="Start"/> relative to the segment, <see cref="Length"/> bytes.</summary>
    private sealed record Target(string Name, long Start, int Length);

    /// <summary>One write: <see cref="Bytes"/> at byte <see cref="At"/> of target <see cref="TargetIndex"/> (clipped to it).</summary>
    public sealed record Scribble(int TargetIndex, int At, byte[] Bytes)
    {
        public override string ToString() => $"target {TargetIndex} +{At}: {Convert.ToHexString(Bytes)}";
    }

    /// <summary>One to three scribbles over targets 0..<paramref name="targets"/>-1.</summary>
    private static Arbitrary<Scribble[]> Scribbles(int targets)
    {
        Gen<Scribble> one =
            from t in Gen.Choose(0, targets - 1)
            from at in Gen.Choose(0, 4095)
            from len in Gen.Elements(1, 2, 4, 8)
            from bytes in Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), len)
            select new Scribble(t, at, bytes);
        return Gen.Choose(1, 3).SelectMany(n => Gen.ArrayOf(one, n)).ToArbitrary();
    }

    /// <summary>Where a scribble lands in <paramref name="t"/>; no bytes when it would touch a word left out (file notes).</summary>
    private static (long Offset, byte[] Bytes) Place(Target t, Scribble s, IReadOnlyList<(long Start, int Length)> excluded)
    {
        int len = Math.Min(s.Bytes.Length, t.Length);
        long at = t.Start + s.At % (t.Length - len + 1);
        foreach ((long start, int length) in excluded)
            if (at < start + length && start < at + len)
                return (at, []);
        return (at, s.Bytes[..len]);
    }

    // ------------------------------------------------------------------
    // What is scribbled on
    // ------------------------------------------------------------------

    /// <summary>How many targets <see cref="TargetsOf"/> lists (the same in a live and a stale segment).</summary>
    private const int TargetCount = 10;

    private static readonly string[] s_entries = [ProcArray.ShmemName, DsmRegistry.ShmemName, CorruptionTests.RegionName];

    private static (List<Target> Targets, List<(long, int)> Excluded) TargetsOf(ShmemSegment seg, ShmemRegion region)
    {
        long index = (byte*)seg.IndexHeader - seg.Base;
        long pg = Find(seg, ProcArray.ShmemName).Offset;
        long dsm = Find(seg, DsmRegistry.ShmemName).Offset;
        long toc = region.Offset;
        long mq = region.Offset + TocQueueOffset;
        var targets = new List<Target>
        {
            new("segment header", 0, 256),
            new("ShmemIndex header", index + 64, 8),
            new("ProcGlobal", pg + 64, sizeof(ProcGlobalHeader) - 64 + 64),
            new("shm_toc", toc, sizeof(ShmTocHeader) + 4 * sizeof(ShmTocEntry)),
            new("shm_mq", mq, sizeof(ShmMqHeader)),
            new("DSM control", dsm + 64, 64 + 4 * sizeof(DsmControlItem)),
            new("DSM data directory length", dsm + sizeof(DsmControlHeader) + 8L * sizeof(DsmControlItem), 4),
        };
        var excluded = new List<(long, int)>
        {
            (OffsetOf<PgShmemHeader>(nameof(PgShmemHeader.State)), 4),
            (OffsetOf<PgShmemHeader>(nameof(PgShmemHeader.AllocLock)), 64),
            (toc + OffsetOf<ShmTocHeader>(nameof(ShmTocHeader.Mutex)), 4),
            (mq + OffsetOf<ShmMqHeader>(nameof(ShmMqHeader.Mutex)), 4),
            (dsm + OffsetOf<DsmControlHeader>(nameof(DsmControlHeader.ItemsLock)), 4),
        };
        // The index entries of the structures read here (the name, its length and hash, the offset and sizes).
        foreach (string name in s_entries)
        {
            long e = CorruptionTests.IndexEntryOffset(seg, name);
            targets.Add(new($"ShmemIndex entry {name}", e, 104));
            excluded.Add((e + OffsetOf<ShmemIndexEntry>(nameof(ShmemIndexEntry.State)), 4));
        }
        Assert.That(targets, Has.Count.EqualTo(TargetCount));
        return (targets, excluded);
    }

    private static long OffsetOf<T>(string field) => CorruptionTests.OffsetOf<T>(field);

    private static ShmemRegion Find(ShmemSegment seg, string name)
        => seg.TryFindStruct(name, out ShmemRegion r) ? r : throw new InvalidOperationException($"no structure {name}");

    /// <summary>Where the queue starts in the test region (after the toc and its entries, as ShmToc lays chunks from the back).</summary>
    private const long TocQueueOffset = CorruptionTests.RegionSize - 4096;

    /// <summary>A toc over the first part of <paramref name="region"/> with one entry, and a queue at <see cref="TocQueueOffset"/>.</summary>
    private static void MakeTocAndQueue(ShmemRegion region)
    {
        ShmToc toc = ShmToc.Create(CorruptionTests.TocMagic, region.Pointer, TocQueueOffset);
        toc.Insert(1, sizeof(ShmTocHeader) + 64);
        ShmMq.Create(region.Pointer + TocQueueOffset, 4096);
    }

    /// <summary>Everything the reading code of a process does with the segment, each step's PgIpcException swallowed (an expected outcome).</summary>
    private static void ReadEverything(ShmemSegment seg)
    {
        Step(() => seg.GetInfo());
        Step(() => seg.GetAllocations());
        Step(() => seg.AttachedPids());
        foreach (string name in (string[])[ProcArray.ShmemName, DsmRegistry.ShmemName, CorruptionTests.RegionName])
            Step(() => seg.TryFindStruct(name, out _));
        Step(() =>
        {
            if (seg.TryFindStruct(ProcArray.ShmemName, out ShmemRegion r))
                ProcArray.ValidateHeader((ProcGlobalHeader*)r.Pointer, r, seg.Handle.Id);
        });
        Step(() =>
        {
            if (seg.TryFindStruct(DsmRegistry.ShmemName, out ShmemRegion r))
                DsmRegistry.ValidateControl((DsmControlHeader*)r.Pointer, r, seg.Handle.Id);
        });
        Step(() =>
        {
            if (!seg.TryFindStruct(CorruptionTests.RegionName, out ShmemRegion r))
                return;
            ShmToc toc = ShmToc.Attach(CorruptionTests.TocMagic, r.Pointer, TocQueueOffset);
            _ = toc.Lookup(1, noError: true);
            _ = toc.FreeBytes;
        });
        Step(() =>
        {
            if (seg.TryFindStruct(CorruptionTests.RegionName, out ShmemRegion r))
                _ = ShmMq.Open(r.Pointer + TocQueueOffset, 4096).ToString();
        });
    }

    private static void Step(Action a)
    {
        try { a(); }
        catch (PgIpcException ex)
        {
            // An expected outcome: the corruption was found and named. Counted by type for the run's summary.
            Count(ex.GetType().Name);
        }
    }

    private static void Count(string outcome)
    {
        lock (s_outcomes)
            s_outcomes[outcome] = s_outcomes.GetValueOrDefault(outcome) + 1;
    }

    private static readonly Dictionary<string, int> s_outcomes = [];

    /// <summary>Prints how the steps ended (which errors the corruption produced) and starts a new count.</summary>
    private static void ReportOutcomes(string what)
    {
        lock (s_outcomes)
        {
            TestContext.Progress.WriteLine($"{what}: {string.Join(", ", s_outcomes.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}"))}");
            s_outcomes.Clear();
        }
    }

    /// <summary>Runs <paramref name="body"/> on its own thread; false (with <paramref name="failure"/>) on a non-PgIpc exception or a timeout.</summary>
    private static bool Bounded(Action body, out string failure)
    {
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { body(); }
            catch (Exception ex) { error = ex; }
        }) { IsBackground = true };
        t.Start();
        if (!t.Join(CaseTimeout))
        {
            failure = $"the case did not finish within {CaseTimeout.TotalSeconds} s (a hang)";
            return false;
        }
        if (error is not null and not PgIpcException)
        {
            failure = error.ToString();
            return false;
        }
        failure = "";
        return true;
    }

    // ------------------------------------------------------------------
    // The properties
    // ------------------------------------------------------------------

    [Test]
    public void RandomCorruptionOfALiveSegmentEndsInAPgIpcErrorOrARecovery()
    {
        string key = TestEnvironment.UniqueKey("fuzz-live");
        Supervisor sup = CorruptionTests.BuildCluster(_platform, key);
        try
        {
            ShmemSegment seg = sup.Cluster.Segment;
            ShmemRegion region = Find(seg, CorruptionTests.RegionName);
            MakeTocAndQueue(region);
            (List<Target> targets, List<(long, int)> excluded) = TargetsOf(seg, region);
            // Snapshots of every region a case may change (by its writes, or by what the live views then repair).
            (long Start, byte[] Bytes)[] snapshots =
            [
                (0, new ReadOnlySpan<byte>(seg.Base, (int)seg.AllocatableStart).ToArray()),
                Snapshot(seg, Find(seg, ProcArray.ShmemName)),
                Snapshot(seg, Find(seg, DsmRegistry.ShmemName)),
                Snapshot(seg, region),
            ];
            ChildWorker poker = Workers.Start(backend, _children);
            poker.Send($"attach {seg.Handle}");
            ProcArray procs = sup.Cluster.Procs;
            DsmRegistry dsm = sup.Cluster.Dsm;
            int cases = 0;

            Check.One(Config.QuickThrowOnFailure.WithMaxTest(Cases), Prop.ForAll(Scribbles(targets.Count), scribbles =>
            {
                cases++;
                foreach (Scribble s in scribbles)
                {
                    (long at, byte[] bytes) = Place(targets[s.TargetIndex], s, excluded);
                    if (bytes.Length > 0)
                        poker.Send($"poke {at} {Convert.ToHexString(bytes)}");
                }
                bool ok = Bounded(() =>
                {
                    // A new process's attach and `pgipc inspect`'s reads.
                    Step(() =>
                    {
                        ShmemSegment view = ShmemSegment.Attach(seg.Handle, _platform);
                        try { ReadEverything(view); }
                        finally { view.Dispose(); }
                    });
                    // The live cluster's own views, which attached before the corruption.
                    ReadEverything(seg);
                    Step(() => procs.GetProcs());
                    Step(() => procs.FreeCount(ProcKind.Backend));
                    Step(() => procs.FreeCount(ProcKind.BackgroundWorker));
                    Step(() => procs.ReclaimDeadSlots());
                    Step(() => dsm.LiveSegments());
                    // Cleanup's examination of this segment, and a second Create of the same cluster.
                    Step(() => PreExistingSegment.Examine(_platform, seg.Handle.Id, null, ClusterLeftovers.Instance, null, out _, out _, out _));
                    Step(() =>
                    {
                        ShmemSegment again = ShmemSegment.Create(key, new ShmemSizeBuilder(), _platform, ClusterLeftovers.Instance);
                        again.Destroy(); // the corruption made ours look foreign: a new segment at another id
                    });
                }, out string failure);
                foreach ((long start, byte[] bytes) in snapshots)
                    bytes.CopyTo(new Span<byte>(seg.Base + start, bytes.Length));
                Interlocked.MemoryBarrier();
                return Prop.Label(ok, failure);
            }));
            Assert.That(cases, Is.GreaterThanOrEqualTo(Cases));
            ReportOutcomes($"live {backend}, {cases} cases");
        }
        finally
        {
            sup.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        }
    }

    private static (long, byte[]) Snapshot(ShmemSegment seg, ShmemRegion r)
        => (r.Offset, new ReadOnlySpan<byte>(r.Pointer, (int)r.Size).ToArray());

    [Test, OnlyOn(Os.Unix, "stale segments exist only where a segment outlives its processes")]
    public void RandomCorruptionOfAStaleSegmentEndsInAPgIpcErrorOrARecovery()
    {
        int cases = 0;
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(Cases), Prop.ForAll(Scribbles(TargetCount), scribbles =>
        {
            cases++;
            string key = TestEnvironment.UniqueKey("fuzz-stale");
            string? staleId = null;
            var made = new List<ShmemSegment>();
            bool ok = Bounded(() =>
            {
                staleId = CorruptionTests.MakeStale(_platform, key, s =>
                {
                    ShmemRegion region = FakeStructures(s);
                    (List<Target> targets, List<(long, int)> excluded) = TargetsOf(s, region);
                    ((PgShmemHeader*)s.Base)->CreatorPid = CorruptionTests.DeadPid;
                    // Written by "the dead process": in-process, after everything else.
                    foreach (Scribble sc in scribbles)
                    {
                        (long at, byte[] bytes) = Place(targets[sc.TargetIndex], sc, excluded);
                        bytes.CopyTo(new Span<byte>(s.Base + at, bytes.Length));
                    }
                });
                Step(() =>
                {
                    PreExistingSegment.Verdict v = PreExistingSegment.Examine(_platform, staleId, null, ClusterLeftovers.Instance, null, out _, out _, out string? damage);
                    Count($"verdict {v}{(damage is null ? "" : " with damage reported")}");
                });
                Step(() =>
                {
                    ShmemSegment m = ShmemSegment.Create(key, new ShmemSizeBuilder(), _platform, ClusterLeftovers.Instance);
                    made.Add(m);
                    Count(m.ReplacedStaleSegment ? "created, stale removed" : "created elsewhere");
                });
            }, out string failure);
            foreach (ShmemSegment m in made)
                m.Destroy();
            // Whatever the verdict (stale and removed, foreign, unknown layout, in use by a pid the scribble named): gone.
            if (staleId is not null && _platform.SharedMemory.QueryStatus(staleId).Exists)
                _platform.SharedMemory.Remove(staleId);
            return Prop.Label(ok, failure);
        }));
        Assert.That(cases, Is.GreaterThanOrEqualTo(Cases));
        ReportOutcomes($"stale {backend}, {cases} cases");
    }

    /// <summary>
    /// The structures of a cluster, written by hand so that no OS object exists for them (an empty semaphore set name:
    /// the stale handler removes nothing it did not find): a valid ProcGlobal of 2 slots, a DSM control table of 8
    /// items, and the test region with a toc and a queue.
    /// </summary>
    private static ShmemRegion FakeStructures(ShmemSegment s)
    {
        var options = new ProcArrayOptions(1, 1, 0);
        ShmemRegion pg = s.InitStruct(ProcArray.ShmemName, ProcArray.ShmemSize(options), out _);
        var h = (ProcGlobalHeader*)pg.Pointer;
        h->NumBackends = 1;
        h->NumAuxiliary = 1;
        h->MaxProcs = 2;
        h->ProcsOffset = pg.Offset + ShmemSize.CacheLineAlign(sizeof(ProcGlobalHeader));
        h->FreeHeads[0] = 0;
        h->FreeHeads[1] = 1;
        h->FreeHeads[2] = -1;
        var slots = (PgProc*)(s.Base + h->ProcsOffset);
        for (int i = 0; i < 2; i++)
        {
            slots[i].ProcNumber = i;
            slots[i].Kind = i;
            slots[i].FreeNext = -1;
            slots[i].LwWaitLockOffset = -1;
        }
        h->Magic = ProcGlobalHeader.MagicValue;

        ShmemRegion d = s.InitStruct(DsmRegistry.ShmemName, DsmRegistry.ShmemSize(new DsmOptions(MaxSegments: 8)), out _);
        var dh = (DsmControlHeader*)d.Pointer;
        dh->MaxItems = 8;
        dh->Implementation = (int)s.Platform.Dsm.Implementations[0];
        dh->Magic = DsmControlHeader.MagicValue;

        ShmemRegion region = s.InitStruct(CorruptionTests.RegionName, CorruptionTests.RegionSize, out _);
        MakeTocAndQueue(region);
        return region;
    }
}
