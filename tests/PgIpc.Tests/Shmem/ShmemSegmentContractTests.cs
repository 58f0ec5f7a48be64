/*-------------------------------------------------------------------------
 * ShmemSegmentContractTests.cs
 *   The shared memory contract every backend must pass, in one process:
 *   create, attach, named structures, allocation, inspection, destroy, and
 *   every kind of bad input with its clear error.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Shmem;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ShmemSegmentContractTests(string backend)
{
    private const long Size = 1 << 20;
    private IPgIpcPlatform _platform = null!;
    private readonly List<ShmemSegment> _segments = [];

    [SetUp]
    public void SetUp() => _platform = PgIpcPlatform.Get(backend);

    [TearDown]
    public void TearDown()
    {
        foreach (ShmemSegment s in _segments)
        {
            if (s.IsAttached && s.IsCreator)
                s.Destroy();
            else
                s.Dispose();
        }
        _segments.Clear();
    }

    private ShmemSegment Create(string what, long size = Size, int indexCapacity = ShmemIndex.DefaultCapacity)
    {
        ShmemSegment s = ShmemSegment.Create(TestEnvironment.UniqueKey(what), size, _platform, indexCapacity);
        _segments.Add(s);
        return s;
    }

    private ShmemSegment Attach(ShmemHandle h)
    {
        ShmemSegment s = ShmemSegment.Attach(h, _platform);
        _segments.Add(s);
        return s;
    }

    [Test]
    public void CreatedSegmentHasHeaderAndHandle()
    {
        ShmemSegment s = Create("hdr");
        ShmemSegmentInfo info = s.GetInfo();
        Assert.Multiple(() =>
        {
            Assert.That(info.Backend, Is.EqualTo(backend));
            Assert.That(info.CreatorPid, Is.EqualTo(Environment.ProcessId));
            Assert.That(info.TotalSize, Is.EqualTo(Size));
            Assert.That(info.State, Is.EqualTo(ShmemState.Ready));
            Assert.That(info.LayoutVersion, Is.EqualTo(PgShmemHeader.CurrentLayoutVersion));
            Assert.That(info.CreatedAt, Is.EqualTo(DateTimeOffset.UtcNow).Within(TimeSpan.FromMinutes(5)));
            Assert.That(s.Handle.Backend, Is.EqualTo(backend));
            Assert.That(ShmemHandle.Parse(s.Handle.ToString()), Is.EqualTo(s.Handle));
            Assert.That(s.FreeBytes, Is.LessThan(Size).And.GreaterThan(Size / 2));
        });
    }

    [Test]
    public void SecondMappingSeesWritesBothWays()
    {
        ShmemSegment a = Create("map2");
        ShmemSegment b = Attach(a.Handle);
        ref long x = ref a.InitStruct<long>("counter", out bool foundA);
        ref long y = ref b.InitStruct<long>("counter", out bool foundB);
        Assert.That(foundA, Is.False);
        Assert.That(foundB, Is.True);
        Volatile.Write(ref x, 42);
        Assert.That(Volatile.Read(ref y), Is.EqualTo(42));
        Volatile.Write(ref y, 43);
        Assert.That(Volatile.Read(ref x), Is.EqualTo(43));
        Assert.That(a.AttachedProcessCount(), Is.GreaterThanOrEqualTo(1));
    }

    [Test]
    public void InitStructFindsTheSameStructure()
    {
        ShmemSegment s = Create("initstruct");
        ShmemRegion r1 = s.InitStruct("my struct", 1000, out bool f1);
        r1.AsSpan().Fill(7);
        ShmemRegion r2 = s.InitStruct("my struct", 1000, out bool f2);
        Assert.Multiple(() =>
        {
            Assert.That(f1, Is.False);
            Assert.That(f2, Is.True);
            Assert.That(r2.Offset, Is.EqualTo(r1.Offset));
            Assert.That(r1.Offset % ShmemSize.CacheLineSize, Is.Zero, "cache-line aligned");
            Assert.That(r2.AsSpan().ToArray(), Is.All.EqualTo(7));
        });
    }

    [Test]
    public void NewStructuresAreZeroFilled()
    {
        ShmemSegment s = Create("zero");
        ShmemRegion r = s.InitStruct("z", 4096, out _);
        Assert.That(r.AsSpan().ContainsAnyExcept((byte)0), Is.False);
    }

    [Test]
    public void InitStructWithDifferentSizeIsAnError()
    {
        ShmemSegment s = Create("sizemismatch");
        s.InitStruct("thing", 128, out _);
        var ex = Assert.Throws<PgIpcException>(() => s.InitStruct("thing", 256, out _));
        Assert.That(ex!.Message, Does.Contain("\"thing\"").And.Contain("expected 256").And.Contain("actual 128"));
    }

    [Test]
    public void InitializerRunsOnceAndConcurrentCallersWaitForIt()
    {
        ShmemSegment s = Create("initonce");
        int runs = 0;
        var barrier = new Barrier(6);
        long[] seen = new long[6];
        TestThreads.Run(6, i =>
        {
            barrier.SignalAndWait();
            ShmemRegion r = s.InitStruct("once", 64, region =>
            {
                Interlocked.Increment(ref runs);
                Thread.Sleep(50);
                Volatile.Write(ref region.As<long>(), 12345);
            }, out _);
            seen[i] = Volatile.Read(ref r.As<long>());
        });
        Assert.That(runs, Is.EqualTo(1));
        Assert.That(seen, Is.All.EqualTo(12345));
    }

    [Test]
    public void FailedInitializerIsReportedToLaterCallers()
    {
        ShmemSegment s = Create("initfail");
        Assert.Throws<InvalidOperationException>(() =>
            s.InitStruct("bad", 64, _ => throw new InvalidOperationException("boom"), out _));
        var ex = Assert.Throws<PgIpcException>(() => s.InitStruct("bad", 64, out _));
        Assert.That(ex!.Message, Does.Contain("failed"));
    }

    [TestCase("")]
    [TestCase("0123456789012345678901234567890123456789012345678901234567890123")] // 64 bytes
    [TestCase("ééééééééééééééééééééééééééééééééé")] // 33 chars, 66 bytes
    public void BadStructureNamesAreRejected(string name)
    {
        ShmemSegment s = Create("badname");
        long free = s.FreeBytes;
        Assert.Throws<ArgumentException>(() => s.InitStruct(name, 64, out _));
        Assert.That(s.FreeBytes, Is.EqualTo(free), "nothing allocated");
    }

    [Test]
    public void NameOf63BytesIsAccepted()
    {
        ShmemSegment s = Create("name63");
        string name = new('n', 63);
        s.InitStruct(name, 64, out bool f);
        Assert.That(f, Is.False);
        Assert.That(s.GetAllocations().Any(a => a.Name == name), Is.True);
    }

    [Test]
    public void NonPositiveStructSizeIsRejected()
    {
        ShmemSegment s = Create("badsize");
        Assert.Throws<ArgumentOutOfRangeException>(() => s.InitStruct("x", 0, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Alloc(-1));
    }

    [Test]
    public unsafe void InitStructWithAnOverflowingSizeFailsWithoutHoldingALockAndLeavesTheIndexUsable()
    {
        // Issue 13: a size whose cache-line rounding overflows used to throw under the index (and allocator)
        // spinlock, which stayed held: every later InitStruct of a new name, in every process, ended stuck.
        ShmemSegment s = Create("overflow");
        long free = s.FreeBytes;
        foreach (long size in (long[])[long.MaxValue, long.MaxValue - 10, long.MaxValue - 62, long.MaxValue - 63])
        {
            // Too big for any segment: out of shared memory, as any request that does not fit (the size is legal).
            Exception? thrown = null;
            try
            {
                s.InitStruct("huge " + size, size, out _);
            }
            catch (Exception e)
            {
                thrown = e;
            }
            bool indexHeld = SLock.IsHeld(ref s.IndexHeader->Lock.Value);
            bool allocHeld = SLock.IsHeld(ref ((PgShmemHeader*)s.Base)->AllocLock.Value);
            if (indexHeld)
                SLock.Release(ref s.IndexHeader->Lock.Value);
            if (allocHeld)
                SLock.Release(ref ((PgShmemHeader*)s.Base)->AllocLock.Value);
            Assert.That(indexHeld || allocHeld, Is.False, $"InitStruct({size}) left the index lock held: {indexHeld}, the allocator lock: {allocHeld}");
            var ex = thrown as OutOfSharedMemoryException;
            Assert.That(ex, Is.Not.Null, $"InitStruct({size}) threw {thrown}");
            Assert.That(ex!.Message, Does.Contain("\"huge " + size + "\""));
            Assert.That(ex.Available, Is.EqualTo(free));
            Assert.Throws<OutOfSharedMemoryException>(() => s.Alloc(size, "huge anonymous"), size.ToString());
            Assert.That(s.TryAlloc(size, out _), Is.False, size.ToString());
            Assert.That(SLock.IsHeld(ref ((PgShmemHeader*)s.Base)->AllocLock.Value), Is.False);
        }
        ShmemRegion r = s.InitStruct("after the overflow", 100, out bool found);
        Assert.Multiple(() =>
        {
            Assert.That(found, Is.False);
            Assert.That(r.Size, Is.EqualTo(100));
            Assert.That(s.FreeBytes, Is.EqualTo(free - 128), "the failed requests took nothing");
            Assert.That(s.TryFindStruct("huge " + long.MaxValue, out _), Is.False);
            Assert.That(s.GetAllocations().Count(a => a.Name is not null && a.Name.StartsWith("huge", StringComparison.Ordinal)), Is.Zero);
        });
    }

    [Test]
    public void AllocationPastTheEndNamesTheRequestAndLeavesTheSegmentUsable()
    {
        ShmemSegment s = Create("oom", 64 * 1024);
        long free = s.FreeBytes;
        var ex = Assert.Throws<OutOfSharedMemoryException>(() => s.InitStruct("too big", free + 1, out _));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.Message, Does.Contain("out of shared memory").And.Contain("\"too big\"").And.Contain((free + 1).ToString()));
            Assert.That(ex.Available, Is.EqualTo(free));
            Assert.That(s.FreeBytes, Is.EqualTo(free), "the failed request took nothing");
            Assert.That(s.TryFindStruct("too big", out _), Is.False);
        });
        Assert.Throws<OutOfSharedMemoryException>(() => s.Alloc(long.MaxValue / 2, "huge anonymous"));
        Assert.That(s.TryAlloc(free + 64, out _), Is.False);
        ShmemRegion ok = s.Alloc(1024);
        Assert.That(ok.Size, Is.EqualTo(1024));
        Assert.That(s.FreeBytes, Is.EqualTo(free - 1024));
    }

    [Test]
    public void AllocationsViewAccountsForEveryByte()
    {
        ShmemSegment s = Create("view");
        s.InitStruct("alpha", 100, out _);
        s.InitStruct("beta", 1000, out _);
        s.Alloc(300);
        IReadOnlyList<ShmemAllocation> rows = s.GetAllocations();
        ShmemAllocation alpha = rows.Single(r => r.Name == "alpha");
        ShmemAllocation beta = rows.Single(r => r.Name == "beta");
        ShmemAllocation anon = rows.Single(r => r.Name == "<anonymous>");
        ShmemAllocation free = rows.Single(r => r.Name is null);
        Assert.Multiple(() =>
        {
            Assert.That(alpha.Size, Is.EqualTo(100));
            Assert.That(alpha.AllocatedSize, Is.EqualTo(128));
            Assert.That(beta.Offset, Is.GreaterThan(alpha.Offset));
            Assert.That(beta.AllocatedSize, Is.EqualTo(1024));
            Assert.That(rows.Sum(r => r.AllocatedSize), Is.EqualTo(s.TotalSize));
            Assert.That(free.Size, Is.EqualTo(s.FreeBytes));
            Assert.That(anon.AllocatedSize, Is.GreaterThanOrEqualTo(ShmemSegment.MinimumSize() + 320));
        });
    }

    [Test]
    public void FullIndexIsAClearError()
    {
        ShmemSegment s = Create("fullindex", indexCapacity: 8);
        for (int i = 0; i < 7; i++)
            s.InitStruct("s" + i, 64, out _);
        var ex = Assert.Throws<OutOfSharedMemoryException>(() => s.InitStruct("one too many", 64, out _));
        Assert.That(ex!.Message, Does.Contain("ShmemIndex").And.Contain("one too many"));
        Assert.That(s.InitStruct("s3", 64, out bool found).Size, Is.EqualTo(64));
        Assert.That(found, Is.True, "existing names are still found when the index is full");
    }

    [TestCase(0L)]
    [TestCase(-5L)]
    [TestCase(1000L)] // smaller than header + index
    public void TooSmallSegmentIsRejected(long size)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ShmemSegment.Create(TestEnvironment.UniqueKey("small"), size, _platform));
    }

    [Test]
    public void HugeSegmentFailsClearlyAndLeavesNothing()
    {
        string key = TestEnvironment.UniqueKey("huge");
        var ex = Assert.Throws<PgIpcOsException>(() => ShmemSegment.Create(key, 1L << 50, _platform));
        Assert.That(ex!.Message, Does.Contain("failed"));
        Assert.That(ShmemSegment.Find(key, _platform), Is.Null);
        foreach (string id in _platform.SharedMemory.CandidateIds(ShmemSegment.HashKey(key)))
            Assert.That(_platform.SharedMemory.QueryStatus(id).Exists, Is.False, id);
    }

    [TestCase("")]
    [TestCase("\n")]
    public void BadKeysAreRejected(string key)
    {
        Assert.Throws<ArgumentException>(() => ShmemSegment.Create(key, Size, _platform));
    }

    [Test]
    public void KeyLongerThan63BytesIsRejected()
    {
        Assert.Throws<ArgumentException>(() => ShmemSegment.Create(new string('k', 64), Size, _platform));
    }

    [Test]
    public void DestroyRemovesTheOsObjectAndLaterAttachFails()
    {
        ShmemSegment s = Create("destroy");
        ShmemHandle h = s.Handle;
        s.Destroy();
        Assert.That(_platform.SharedMemory.QueryStatus(h.Id).Exists, Is.False);
        Assert.Throws<SharedMemoryNotFoundException>(() => ShmemSegment.Attach(h, _platform));
        Assert.That(ShmemSegment.Find(s.Key, _platform), Is.Null);
    }

    [Test]
    public void DestroyWhileAnotherMappingLivesRefusesNewAttachers()
    {
        ShmemSegment a = Create("destroylive");
        ShmemSegment b = Attach(a.Handle);
        ref long x = ref b.InitStruct<long>("v", out _);
        a.Destroy();
        Volatile.Write(ref x, 5); // b's mapping is still valid
        Assert.That(Volatile.Read(ref x), Is.EqualTo(5));
        Assert.Throws<SharedMemoryNotFoundException>(() => ShmemSegment.Attach(a.Handle, _platform));
        b.Dispose();
        Assert.That(_platform.SharedMemory.QueryStatus(a.Handle.Id).Exists, Is.False);
    }

    [Test]
    public void DestroyTwiceIsAClearError()
    {
        ShmemSegment s = Create("destroy2");
        s.Destroy();
        var ex = Assert.Throws<ObjectDisposedException>(() => s.Destroy());
        Assert.That(ex!.Message, Does.Contain("already destroyed"));
        Assert.DoesNotThrow(() => s.Dispose());
        Assert.Throws<ObjectDisposedException>(() => s.Alloc(64));
    }

    [Test]
    public void ForgedCookieIsRefused()
    {
        ShmemSegment s = Create("forged");
        ShmemHandle forged = s.Handle with { Cookie = s.Handle.Cookie ^ 1 };
        var ex = Assert.Throws<InvalidShmemHandleException>(() => ShmemSegment.Attach(forged, _platform));
        Assert.That(ex!.Message, Does.Contain("forged or stale"));
        Assert.That(s.AttachedPids(), Has.Count.EqualTo(1), "the refused attach left no attachment behind");
    }

    [Test]
    public void WrongSizeInHandleIsRefused()
    {
        ShmemSegment s = Create("wrongsize");
        Assert.Throws<InvalidShmemHandleException>(() => ShmemSegment.Attach(s.Handle with { Size = s.Handle.Size * 2 }, _platform));
    }

    [Test]
    public void HandleToNothingIsNotFound()
    {
        ShmemSegment s = Create("nothing");
        ShmemHandle h = s.Handle;
        s.Destroy();
        Assert.Throws<SharedMemoryNotFoundException>(() => ShmemSegment.Attach(h, _platform));
    }

    [TestCase("")]
    [TestCase("garbage")]
    [TestCase("pgipc1;linux;0;0000000000000001;0x50000000/1")]
    [TestCase("pgipc1;linux;100;xyz;0x50000000/1")]
    [TestCase("pgipc1;linux;100;0000000000000001;")]
    [TestCase("pgipc2;linux;100;0000000000000001;id")]
    public void MalformedHandlesAreRejected(string text)
    {
        Assert.Throws<InvalidShmemHandleException>(() => ShmemSegment.Attach(text));
    }

    [Test]
    public void HandleForUnknownBackendIsRejected()
    {
        Assert.Throws<ArgumentException>(() => ShmemSegment.Attach("pgipc1;vms;100;0000000000000001;x"));
    }

    [Test]
    public void CreatingALiveClusterAgainIsRefusedWithThePid()
    {
        ShmemSegment s = Create("twice");
        var ex = Assert.Throws<SharedMemoryInUseException>(() => ShmemSegment.Create(s.Key, Size, _platform));
        Assert.That(ex!.Pid, Is.EqualTo(Environment.ProcessId));
        Assert.That(ex.Message, Does.Contain($"in use by pid {Environment.ProcessId}"));
        Assert.That(s.GetInfo().State, Is.EqualTo(ShmemState.Ready), "the refused create did not disturb the live segment");
    }

    [Test]
    public void AttachByKeyFindsTheLiveSegment()
    {
        ShmemSegment s = Create("bykey");
        s.InitStruct<int>("i", out _) = 9;
        ShmemSegment b = ShmemSegment.AttachByKey(s.Key, _platform);
        _segments.Add(b);
        Assert.That(b.Handle, Is.EqualTo(s.Handle));
        Assert.That(b.InitStruct<int>("i", out bool found), Is.EqualTo(9));
        Assert.That(found, Is.True);
        Assert.Throws<SharedMemoryNotFoundException>(() => ShmemSegment.AttachByKey(TestEnvironment.UniqueKey("none"), _platform));
    }

    [Test]
    public void AttachTableCountsMappingsAndDetachClearsThem()
    {
        ShmemSegment a = Create("table");
        ShmemSegment b = Attach(a.Handle);
        Assert.That(a.AttachedPids(), Is.EqualTo(new[] { Environment.ProcessId, Environment.ProcessId }));
        b.Dispose();
        Assert.That(a.AttachedPids(), Is.EqualTo(new[] { Environment.ProcessId }));
        Assert.Throws<ObjectDisposedException>(() => b.InitStruct("x", 8, out _));
    }

    [Test]
    public void ManyCreateDestroyCyclesLeaveNothing()
    {
        for (int i = 0; i < 50; i++)
        {
            ShmemSegment s = ShmemSegment.Create(TestEnvironment.UniqueKey("cycle"), 256 * 1024, _platform);
            ShmemHandle h = s.Handle;
            s.InitStruct("x", 1000, out _);
            s.Destroy();
            Assert.That(_platform.SharedMemory.QueryStatus(h.Id).Exists, Is.False);
        }
    }
}
