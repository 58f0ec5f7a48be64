/*-------------------------------------------------------------------------
 * DsmSegmentTests.cs
 *   Dynamic shared memory: create / attach / detach and reference counts,
 *   removal of the OS object, pinning, on-detach callbacks, full control
 *   table, sizes the OS cannot back, unknown handles, other processes
 *   (including one killed while attached) and crash leftovers. Every test
 *   runs for each implementation kind the backend offers.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using NUnit.Framework;
using PgIpc.Dsm;
using PgIpc.Platform;

namespace PgIpc.Tests.Dsm;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class DsmSegmentTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<string> _dataDirs = [];

    private IEnumerable<DsmImplementation> Kinds => _platform.Dsm.Implementations;

    private string? DataDirFor(DsmImplementation kind)
    {
        if (kind != DsmImplementation.Mmap)
            return null;
        string d = DsmCluster.NewDataDirectory();
        _dataDirs.Add(d);
        return d;
    }

    [TearDown]
    public void RemoveDataDirs()
    {
        foreach (string d in _dataDirs)
            if (Directory.Exists(d))
                Directory.Delete(d, recursive: true);
        _dataDirs.Clear();
    }

    private bool Exists(DsmImplementation kind, uint handle, string? dataDir)
        => DsmCluster.OsObjectExists(_platform, kind, handle, dataDir);

    [Test]
    public void CreateAttachDetach_LastDetachRemovesTheOsObject()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            using DsmCluster c = DsmCluster.Create(_platform, kind, dd);
            DsmSegment a = DsmSegment.Create(c.Registry, 10_000)!;
            Assert.That(a.Handle, Is.Not.Zero, kind.ToString());
            Assert.That(a.Size, Is.EqualTo(10_000));
            Assert.That(a.AsSpan().ToArray().All(b => b == 0), Is.True, $"{kind}: a new segment is zero-filled");
            a.AsSpan()[9_999] = 0x5A;
            Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(2));
            Assert.That(Exists(kind, a.Handle, dd), Is.True, $"{kind}: {c.Registry.OsNameOf(a.Handle)} exists");

            DsmSegment b = DsmSegment.Attach(c.Registry, a.Handle);
            Assert.That(b.AsSpan()[9_999], Is.EqualTo(0x5A), kind.ToString());
            Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(3));
            b.Detach();
            Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(2));
            Assert.That(Exists(kind, a.Handle, dd), Is.True, $"{kind}: still mapped by the creator");

            a.Dispose();
            Assert.That(a.IsAttached, Is.False);
            Assert.That(c.Registry.ReferenceCount(a.Handle), Is.Zero);
            Assert.That(Exists(kind, a.Handle, dd), Is.False, $"{kind}: the last detach removes {c.Registry.OsNameOf(a.Handle)}");
            Assert.That(c.Registry.LiveSegments(), Is.Zero);
        }
    }

    [Test]
    public void Pin_SegmentOutlivesItsCreator()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            using DsmCluster c = DsmCluster.Create(_platform, kind, dd);
            DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
            uint h = a.Handle;
            a.AsSpan()[7] = 7;
            a.Pin();
            Assert.Throws<InvalidOperationException>(() => a.Pin());
            a.Detach();
            Assert.That(c.Registry.ReferenceCount(h), Is.EqualTo(2), $"{kind}: pinned, unmapped");
            Assert.That(Exists(kind, h, dd), Is.True, kind.ToString());

            DsmSegment b = DsmSegment.Attach(c.Registry, h);
            Assert.That(b.AsSpan()[7], Is.EqualTo(7), kind.ToString());
            b.Detach();
            c.Registry.Unpin(h);
            Assert.That(c.Registry.ReferenceCount(h), Is.Zero);
            Assert.That(Exists(kind, h, dd), Is.False, $"{kind}: unpinning the unmapped segment removes it");
            Assert.Throws<SharedMemoryNotFoundException>(() => c.Registry.Unpin(h));
        }
    }

    [Test]
    public void Pin_SegmentOutlivesTheProcessThatCreatedAndPinnedIt()
    {
        // dsm_pin_segment's promise across processes: on Windows a section dies with its last handle, so the pin must
        // hand one to the supervisor (this test process) before the creator exits.
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            using DsmCluster c = DsmCluster.Create(_platform, kind, dd);
            uint h;
            using (ChildWorker w = ChildWorker.Start(backend))
            {
                w.Send($"attach {c.Segment.Handle}");
                h = uint.Parse(w.Send("dsm-create 8192"), CultureInfo.InvariantCulture);
                w.Send($"dsm-write {h} 64 4242");
                w.Send($"dsm-pin {h}");
                w.Send($"dsm-detach {h}");
                w.Close();
            }
            Assert.That(c.Registry.ReferenceCount(h), Is.EqualTo(2), $"{kind}: pinned, nobody maps it");
            using (DsmSegment b = DsmSegment.Attach(c.Registry, h))
                Assert.That(MemoryMarshalRead(b, 64), Is.EqualTo(4242L), $"{kind}: the pinned segment outlived its creator");
            c.Registry.Unpin(h);
            Assert.That(c.Registry.ReferenceCount(h), Is.Zero);
            Assert.That(Exists(kind, h, dd), Is.False, $"{kind}: unpinned and unmapped, the OS object is gone");
        }
    }

    [Test]
    public void PinMapping_DisposeKeepsItUntilTheClusterDetach()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            DsmCluster c = DsmCluster.Create(_platform, kind, dd);
            DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
            uint h = a.Handle;
            a.PinMapping();
            a.Dispose();
            Assert.That(a.IsAttached, Is.True, $"{kind}: a pinned mapping survives Dispose");
            c.Dispose();
            Assert.That(a.IsAttached, Is.False, $"{kind}: the cluster detach detaches it");
            Assert.That(Exists(kind, h, dd), Is.False, kind.ToString());
        }
    }

    [Test]
    public void OnDetach_CallbacksRunInReverseOrderWhileMapped()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            using DsmCluster c = DsmCluster.Create(_platform, kind, DataDirFor(kind));
            DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
            var order = new List<int>();
            a.OnDetach(s => order.Add(1));
            a.OnDetach(s => { order.Add(2); s.AsSpan()[0] = 1; });
            Action<DsmSegment> cancelled = s => order.Add(99);
            a.OnDetach(cancelled);
            a.OnDetach(s => order.Add(3));
            Assert.That(a.CancelOnDetach(cancelled), Is.True);
            a.Detach();
            Assert.That(order, Is.EqualTo(new[] { 3, 2, 1 }), kind.ToString());
            a.Detach(); // idempotent
            Assert.That(order, Has.Count.EqualTo(3));
        }
    }

    [Test]
    public void NoFail_ReturnsNullWhenTheControlTableIsFull()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            using DsmCluster c = DsmCluster.Create(_platform, kind, dd, maxSegments: 2);
            DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
            DsmSegment b = DsmSegment.Create(c.Registry, 4096)!;
            Assert.That(DsmSegment.Create(c.Registry, 4096, DsmCreateFlags.NoFail), Is.Null, kind.ToString());
            var ex = Assert.Throws<DsmSlotsExhaustedException>(() => DsmSegment.Create(c.Registry, 4096));
            Assert.That(ex!.Message, Does.Contain("all 2 control slots"));
            b.Detach();
            DsmSegment? d = DsmSegment.Create(c.Registry, 4096, DsmCreateFlags.NoFail);
            Assert.That(d, Is.Not.Null, $"{kind}: a freed slot is reused");
            a.Detach();
            d!.Detach();
            Assert.That(c.Registry.LiveSegments(), Is.Zero);
        }
    }

    [Test]
    public void TooLarge_GivesAClearErrorAtCreate()
    {
        const long huge = 1L << 46; // 64 TiB
        foreach (DsmImplementation kind in Kinds)
        {
            using DsmCluster c = DsmCluster.Create(_platform, kind, DataDirFor(kind));
            var ex = Assert.Catch<DsmNoSpaceException>(() => DsmSegment.Create(c.Registry, huge));
            Assert.That(ex!.Requested, Is.EqualTo(huge), kind.ToString());
            Assert.That(ex.Message, Does.Contain(huge.ToString(CultureInfo.InvariantCulture)), kind.ToString());
            if (kind == DsmImplementation.Posix)
                Assert.That(ex.Message, Does.Contain("No space left on device; /dev/shm is probably too small"));
            Assert.That(DsmSegment.Create(c.Registry, huge, DsmCreateFlags.NoFail), Is.Null, kind.ToString());
            Assert.That(c.Registry.LiveSegments(), Is.Zero);
        }
    }

    [Test]
    public void Attach_UnknownOrDestroyedHandleGivesAClearError()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            using DsmCluster c = DsmCluster.Create(_platform, kind, DataDirFor(kind));
            var ex = Assert.Throws<SharedMemoryNotFoundException>(() => DsmSegment.Attach(c.Registry, 12345));
            Assert.That(ex!.Message, Does.Contain("12345").And.Contain("does not exist"));
            DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
            uint h = a.Handle;
            a.Detach();
            Assert.Throws<SharedMemoryNotFoundException>(() => DsmSegment.Attach(c.Registry, h));
            Assert.Throws<ObjectDisposedException>(() => a.AsSpan());
        }
    }

    [Test]
    public void CrossProcess_WorkerSeesTheCreatorsBytesAndViceVersa()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            using DsmCluster c = DsmCluster.Create(_platform, kind, dd);
            DsmSegment a = DsmSegment.Create(c.Registry, 1 << 16)!;
            Volatile.Write(ref System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(a.Slice(64, 8))[0], 0x1234_5678_9ABCL);
            using (ChildWorker w = ChildWorker.Start(backend))
            {
                w.Send($"attach {c.Segment.Handle}");
                Assert.That(w.Send($"dsm-attach {a.Handle}"), Is.EqualTo((1 << 16).ToString(CultureInfo.InvariantCulture)));
                Assert.That(w.Send($"dsm-read {a.Handle} 64"), Is.EqualTo(0x1234_5678_9ABCL.ToString(CultureInfo.InvariantCulture)), kind.ToString());
                w.Send($"dsm-write {a.Handle} 128 -42");
                Assert.That(Volatile.Read(ref System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(a.Slice(128, 8))[0]), Is.EqualTo(-42L), kind.ToString());
                Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(3));
                w.Send($"dsm-detach {a.Handle}");
                Assert.That(c.Registry.ReferenceCount(a.Handle), Is.EqualTo(2));
                // The worker creates one; the parent attaches to it by handle.
                uint h2 = uint.Parse(w.Send("dsm-create 4096"), CultureInfo.InvariantCulture);
                w.Send($"dsm-write {h2} 0 77");
                using (DsmSegment b = DsmSegment.Attach(c.Registry, h2))
                    Assert.That(MemoryMarshalRead(b, 0), Is.EqualTo(77L));
                w.Close(); // the worker detaches from the cluster: its segments go with it
                Assert.That(c.Registry.ReferenceCount(h2), Is.Zero, $"{kind}: the worker's cluster detach dropped its reference");
                Assert.That(Exists(kind, h2, dd), Is.False, kind.ToString());
            }
            a.Detach();
            Assert.That(Exists(kind, a.Handle, dd), Is.False, kind.ToString());
        }
    }

    [Test]
    public void KilledWorker_DoesNotLeaveTheSegmentUnremovable()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            DsmCluster c = DsmCluster.Create(_platform, kind, dd);
            uint h;
            try
            {
                DsmSegment a = DsmSegment.Create(c.Registry, 4096)!;
                h = a.Handle;
                using (ChildWorker w = ChildWorker.Start(backend))
                {
                    w.Send($"attach {c.Segment.Handle}");
                    w.Send($"dsm-attach {h}");
                    w.Kill();
                }
                a.Detach();
                Assert.That(c.Registry.ReferenceCount(h), Is.EqualTo(2), $"{kind}: the killed worker's reference is still counted");
            }
            finally
            {
                c.Dispose(); // Destroy removes every segment left in the table
            }
            Assert.That(Exists(kind, h, dd), Is.False, $"{kind}: destroying the cluster removed the segment");
        }
    }

    [Test, OnlyOn(Os.Unix, "the kernel closes a dead process's sections: nothing can be left over")]
    public void CrashedCluster_LeftoversAreRemovedAtTheNextStart()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string dd = DsmCluster.NewDataDirectory();
            _dataDirs.Add(dd);
            string key = TestEnvironment.UniqueKey("dsmcrash");
            uint h;
            using (ChildWorker w = ChildWorker.Start(backend))
            {
                w.Send($"dsm-cluster {key} {kind} {dd} {backend}");
                h = uint.Parse(w.Send("dsm-create 8192"), CultureInfo.InvariantCulture);
                w.Kill();
            }
            Assert.That(Exists(kind, h, dd), Is.True, $"{kind}: the crashed cluster left its segment");
            Assert.That(DsmRegistry.ReadControlFile(dd), Does.Contain((kind, h)));
            using DsmCluster c = DsmCluster.Create(_platform, kind, dd, key: key);
            Assert.That(c.Registry.LeftoversRemoved, Is.GreaterThanOrEqualTo(1), kind.ToString());
            Assert.That(Exists(kind, h, dd), Is.False, $"{kind}: the next start removed {c.Registry.OsNameOf(h)}");
        }
    }

    [Test]
    public void ControlFileWriteFailure_CreateThrowsAClearErrorAndTheRegistryStillWorks()
    {
        // Issue 13: the control file was written under the ItemsLock spinlock; a failing write threw out of Create
        // with a raw I/O exception after the table slot was taken (a leaked entry and OS object).
        foreach (DsmImplementation kind in Kinds)
        {
            string dd = DsmCluster.NewDataDirectory();
            _dataDirs.Add(dd);
            using DsmCluster c = DsmCluster.Create(_platform, kind, dd);
            DsmSegment a = DsmSegment.Create(c.Registry, 8192)!;
            string control = Path.Combine(dd, "pg_dynshmem", DsmRegistry.ControlFileName);
            Assert.That(File.Exists(control), Is.True, kind.ToString());
            File.Delete(control);
            Directory.CreateDirectory(control); // the rename onto it now fails
            string[] filesBefore = Directory.GetFiles(dd, "*", SearchOption.AllDirectories);

            var ex = Assert.Catch<PgIpcException>(() => DsmSegment.Create(c.Registry, 8192), kind.ToString());
            bool held = c.Registry.ItemsLockHeld;
            Assert.That(held, Is.False, $"{kind}: Create left ItemsLock held");
            Assert.Multiple(() =>
            {
                Assert.That(ex!.Message, Does.Contain(control), kind.ToString());
                Assert.That(ex.InnerException, Is.InstanceOf<IOException>().Or.InstanceOf<UnauthorizedAccessException>(), kind.ToString());
                Assert.That(c.Registry.LiveSegments(), Is.EqualTo(1), $"{kind}: the failed Create gave its table slot back");
                Assert.That(Directory.GetFiles(dd, "*", SearchOption.AllDirectories), Is.EquivalentTo(filesBefore), $"{kind}: no file left behind");
            });

            Directory.Delete(control);
            DsmSegment b = DsmSegment.Create(c.Registry, 8192)!;
            Assert.That(c.Registry.LiveSegments(), Is.EqualTo(2), kind.ToString());
            Assert.That(DsmRegistry.ReadControlFile(dd), Is.EquivalentTo(new[] { (kind, a.Handle), (kind, b.Handle) }), kind.ToString());
            b.Detach();
            a.Detach();
            Assert.That(DsmRegistry.ReadControlFile(dd), Is.Empty, kind.ToString());
        }
    }

    [Test]
    public void ConcurrentCreatesAndDetaches_TheControlFileEndsWithTheLiveHandles()
    {
        string dd = DsmCluster.NewDataDirectory();
        _dataDirs.Add(dd);
        DsmImplementation kind = Kinds.First();
        using DsmCluster c = DsmCluster.Create(_platform, kind, dd, maxSegments: 32);
        var kept = new System.Collections.Concurrent.ConcurrentBag<DsmSegment>();
        System.Threading.Tasks.Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
        {
            for (int i = 0; i < 10; i++)
            {
                DsmSegment s = DsmSegment.Create(c.Registry, 4096)!;
                if (i % 3 == 0)
                    kept.Add(s);
                else
                    s.Detach();
            }
        });
        Assert.That(DsmRegistry.ReadControlFile(dd), Is.EquivalentTo(kept.Select(s => (kind, s.Handle))));
        foreach (DsmSegment s in kept)
            s.Detach();
        Assert.That(DsmRegistry.ReadControlFile(dd), Is.Empty);
    }

    [Test]
    public void CleanupLeftovers_RemovesRecordedHandles()
    {
        foreach (DsmImplementation kind in Kinds)
        {
            string? dd = DataDirFor(kind);
            const uint h = 0x0BADF00D;
            IMappedSegment? m = _platform.Dsm.Create(kind, h, 4096, dd);
            Assert.That(m, Is.Not.Null);
            m!.Dispose();
            int removed = DsmRegistry.CleanupLeftovers(_platform, kind, dd, [h, 0x0BADF00E]);
            Assert.That(removed, Is.EqualTo(1), kind.ToString());
            Assert.That(Exists(kind, h, dd), Is.False, kind.ToString());
        }
    }

    private static long MemoryMarshalRead(DsmSegment s, long offset)
        => Volatile.Read(ref System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(s.Slice(offset, 8))[0]);
}
