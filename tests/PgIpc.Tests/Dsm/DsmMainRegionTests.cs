/*-------------------------------------------------------------------------
 * DsmMainRegionTests.cs
 *   Dynamic segments from the main segment's reserved region
 *   (min_dynamic_shared_memory): handed out first with no OS object,
 *   zero-filled, attached by handle from another process, pinned and
 *   unpinned, given back on the last detach; OS segments once the region
 *   is full; a corrupt page range refused at attach.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Dsm;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class DsmMainRegionTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private const long Region = 256 * 1024; // 64 pages

    private DsmImplementation Kind => _platform.Dsm.Implementations.First(k => k != DsmImplementation.Mmap);

    private DsmCluster Create() => DsmCluster.Create(_platform, Kind, mainRegion: Region);

    [Test]
    public void SegmentsComeFromTheMainRegionFirstWithNoOsObject()
    {
        using DsmCluster c = Create();
        Assert.That(c.Registry.MainRegionPageCount, Is.EqualTo(64));
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(64));
        DsmSegment a = DsmSegment.Create(c.Registry, 10_000)!;
        Assert.That(a.Implementation, Is.EqualTo(DsmImplementation.MainRegion));
        Assert.That(a.Handle & 1, Is.EqualTo(1u), "main-region handles are odd");
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(64 - 3), "10,000 bytes take three 4 KiB pages");
        Assert.That(DsmCluster.OsObjectExists(_platform, Kind, a.Handle, null), Is.False, "no OS object behind it");
        long start = (long)a.Address, segStart = (long)c.Segment.Base, segEnd = segStart + c.Segment.TotalSize;
        Assert.That(start >= segStart && start + a.Size <= segEnd, Is.True, "its memory lies inside the main segment");
        Assert.That(start % DsmRegistry.MainRegionPageSize, Is.Zero, "page aligned");
        Assert.That(a.AsSpan().ToArray().All(b => b == 0), Is.True);
        a.AsSpan()[9_999] = 0x5A;

        DsmSegment b = DsmSegment.Attach(c.Registry, a.Handle);
        Assert.That(b.AsSpan()[9_999], Is.EqualTo(0x5A));
        Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(3));
        b.Detach();
        a.Detach();
        Assert.That(c.Registry.ReferenceCount(a.Handle), Is.Zero);
        Assert.That(c.Registry.LiveSegments(), Is.Zero);
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(64), "the last detach gives the pages back");
        Assert.Throws<SharedMemoryNotFoundException>(() => DsmSegment.Attach(c.Registry, a.Handle));
    }

    [Test]
    public void AReusedRunOfPagesIsZeroFilledAgain()
    {
        using DsmCluster c = Create();
        DsmSegment a = DsmSegment.Create(c.Registry, 8192)!;
        a.AsSpan().Fill(0xFF);
        nint at = a.Address;
        a.Detach();
        DsmSegment b = DsmSegment.Create(c.Registry, 8192)!;
        Assert.That(b.Address, Is.EqualTo(at), "first fit takes the same pages again");
        Assert.That(b.AsSpan().ToArray().All(x => x == 0), Is.True, "dsm_create's memory is zero-filled, also on reused pages");
        b.Detach();
    }

    [Test]
    public void WhenTheRegionIsFullSegmentsComeFromTheOsAndFreedPagesAreUsedAgain()
    {
        using DsmCluster c = Create();
        var fromRegion = new List<DsmSegment>();
        for (int i = 0; i < 4; i++)
            fromRegion.Add(DsmSegment.Create(c.Registry, 64 * 1024)!);
        Assert.That(fromRegion.All(s => s.Implementation == DsmImplementation.MainRegion), Is.True);
        Assert.That(c.Registry.MainRegionFreePages, Is.Zero);

        DsmSegment big = DsmSegment.Create(c.Registry, 1 << 20)!;
        DsmSegment small = DsmSegment.Create(c.Registry, 4096)!;
        Assert.That(big.Implementation, Is.EqualTo(Kind), "larger than the region: an OS segment");
        Assert.That(small.Implementation, Is.EqualTo(Kind), "region full: an OS segment");
        Assert.That(big.Handle & 1, Is.Zero, "OS handles are even");
        Assert.That(DsmCluster.OsObjectExists(_platform, Kind, small.Handle, null), Is.True);

        // A hole in the middle: a segment that fits it comes from the region again; one that does not, from the OS.
        fromRegion[1].Detach();
        DsmSegment tooBig = DsmSegment.Create(c.Registry, 64 * 1024 + 1)!;
        DsmSegment fits = DsmSegment.Create(c.Registry, 64 * 1024)!;
        Assert.That(tooBig.Implementation, Is.EqualTo(Kind));
        Assert.That(fits.Implementation, Is.EqualTo(DsmImplementation.MainRegion));
        foreach (DsmSegment s in new[] { big, small, tooBig, fits, fromRegion[0], fromRegion[2], fromRegion[3] })
            s.Detach();
        Assert.That(c.Registry.LiveSegments(), Is.Zero);
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(64));
        Assert.That(DsmCluster.OsObjectExists(_platform, Kind, small.Handle, null), Is.False);
    }

    [Test]
    public void APinnedMainRegionSegmentOutlivesItsCreatorUntilUnpinned()
    {
        using DsmCluster c = Create();
        DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
        uint h = a.Handle;
        a.AsSpan()[7] = 7;
        a.Pin();
        a.Detach();
        Assert.That(c.Registry.ReferenceCount(h), Is.EqualTo(2));
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(63), "pinned: its page stays taken");
        using (DsmSegment b = DsmSegment.Attach(c.Registry, h))
            Assert.That(b.AsSpan()[7], Is.EqualTo(7));
        c.Registry.Unpin(h);
        Assert.That(c.Registry.ReferenceCount(h), Is.Zero);
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(64));
    }

    [Test]
    public void AnotherProcessAttachesByHandleAndSeesTheSameBytes()
    {
        using DsmCluster c = Create();
        DsmSegment a = DsmSegment.Create(c.Registry, 1 << 16)!;
        Assert.That(a.Implementation, Is.EqualTo(DsmImplementation.MainRegion));
        Volatile.Write(ref MemoryMarshal.Cast<byte, long>(a.Slice(64, 8))[0], 0x1234_5678L);
        using (ChildWorker w = ChildWorker.Start(backend))
        {
            w.Send($"attach {c.Segment.Handle}");
            Assert.That(w.Send($"dsm-attach {a.Handle}"), Is.EqualTo((1 << 16).ToString(CultureInfo.InvariantCulture)));
            Assert.That(w.Send($"dsm-read {a.Handle} 64"), Is.EqualTo(0x1234_5678L.ToString(CultureInfo.InvariantCulture)));
            w.Send($"dsm-write {a.Handle} 128 -42");
            Assert.That(Volatile.Read(ref MemoryMarshal.Cast<byte, long>(a.Slice(128, 8))[0]), Is.EqualTo(-42L));
            uint h2 = uint.Parse(w.Send("dsm-create 4096"), CultureInfo.InvariantCulture);
            Assert.That(h2 & 1, Is.EqualTo(1u), "the worker's segment comes from the region too");
            w.Send($"dsm-write {h2} 0 77");
            using (DsmSegment b = DsmSegment.Attach(c.Registry, h2))
                Assert.That(MemoryMarshal.Read<long>(b.AsSpan()), Is.EqualTo(77L));
            w.Close(); // its cluster detach drops its references
            Assert.That(c.Registry.ReferenceCount(h2), Is.Zero);
            Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(2));
        }
        a.Detach();
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(64));
    }

    [Test]
    public void ACorruptPageRangeIsRefusedAtAttach()
    {
        using DsmCluster c = Create();
        DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
        Assert.That(c.Segment.TryFindStruct(DsmRegistry.ShmemName, out ShmemRegion r), Is.True);
        var items = (DsmControlItem*)(r.Pointer + sizeof(DsmControlHeader));
        int slot = Enumerable.Range(0, 16).First(i => items[i].Handle == a.Handle && items[i].RefCnt >= 2);
        int saved = items[slot].FirstPage;
        items[slot].FirstPage = 1 << 20; // as another process's stray write would
        ShmemCorruptException ex = Assert.Throws<ShmemCorruptException>(() => DsmSegment.Attach(c.Registry, a.Handle))!;
        Assert.That(ex.Message, Does.Contain("FirstPage"));
        Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(2), "the refused attach took no reference");
        items[slot].FirstPage = saved;
        a.Detach();
        Assert.That(c.Registry.MainRegionFreePages, Is.EqualTo(64));
    }

    [Test]
    public void ANegativeOrHugeRegionSizeIsRefusedWithAClearError()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new DsmOptions(MainRegionSize: -1).Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new DsmOptions(MainRegionSize: DsmOptions.MaxMainRegionSize + 1).Validate());
    }
}
